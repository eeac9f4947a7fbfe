"""Fine-tuning the members' image towers with a linear head on a labelled set (`compt finetune`).

`config` holds the settings, `recipe` the field's recipe (AdamW, layer-wise lr decay, warmup + cosine, label
smoothing, EMA; full or linear), `data` the labelled splits, `runner` the per-member loop over a run directory
with its results and resume state (`finetune_run`), `table` the report's fine-tuning table.
"""
