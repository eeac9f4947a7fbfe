"""The CLIP paradigm (open_clip CLIP and SigLIP image–text models): its `compt.paradigm.Paradigm` adapter.

`compt.clip.paradigm.PARADIGM` is what the core sees; the models, growth operators, losses, tasks, data and
evaluation it delegates to are `compt.models`, `compt.growth`, `compt.losses`, `compt.tasks`, `compt.data`
and `compt.evaluation`.
"""
