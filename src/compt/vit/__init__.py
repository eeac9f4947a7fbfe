"""The supervised image-classification paradigm: timm Vision Transformers (DeiT-style) trained as a chain.

- `compt.vit.models`   `ViTConfig`, the registry (``vit-test``, ``vit-tiny``, ``deit``), factory (timm), export
- `compt.vit.flops`    analytic forward FLOPs and parameter counts
- `compt.vit.growth`   ``preserve``: exact width and depth growth of timm ViT state dicts
- `compt.vit.losses`   cross-entropy, logit KL at a temperature, feature MSE
- `compt.vit.task`     the classification task, plain or distilled from the frozen predecessor
- `compt.vit.data`     labelled images: ImageFolder (the ImageNet layout) or synthetic coloured shapes; top-1
- `compt.vit.paradigm` the `compt.paradigm.Paradigm` adapter the core sees, registered through an entry point
- `compt.vit.cli`      `compt eval` (held-out top-1 of a checkpoint) and `compt grow` (child + timm folder)
- `compt.vit.finetune` `compt finetune`: a new head on a labelled set, full or linear, filed and resumable

It is the example of a paradigm that lives in its own folder and changes no core file (docs/vit.md).
"""
