"""The CLIP paradigm: open_clip CLIP and SigLIP image–text models, everything compt knows about them.

`compt.clip.paradigm.PARADIGM` is what the core sees (`compt.paradigm.Paradigm`). Behind it: `models` (configs,
the registry, the factory; `swin`, `siglip`), `flops` (analytic FLOPs), `growth/` (corner, preserve, stack),
`losses` and `tasks` (InfoNCE / SigLIP and distillation), `data/` (the data kinds), `evaluation/` (zero-shot,
retrieval, linear probe), `teacher_cache` (teacher features computed once), `tokenizer`, `export` (open_clip
local-dir folders) and `bench/` (clip_benchmark).
"""
