"""The training cost model (SPEC §5), shared by every paradigm: the FLOPs of a stage's samples.

A paradigm supplies the forward FLOPs of one sample (`compt.paradigm.Paradigm.forward_flops`); the planner
(`compt.plan`) and the trainer (`compt.train`) price a stage with `training_flops` alone.
"""

from __future__ import annotations


def training_flops(student_fwd: float, teacher_fwd: float, samples: float, *, cached_teacher: bool = False,
                   fill_samples: float = 0) -> float:
    """Training FLOPs of `samples` samples (SPEC §5) — the one cost model of `compt plan` and the trainer.

    Per sample 3 × student forward (forward + backward) plus one teacher forward; with a teacher cache the
    teacher runs once over `fill_samples` samples instead::

        cost = fill_samples · F_t + samples · (3·F_s + F_t)        (F_t → 0 in the bracket when cached)

    `teacher_fwd` = 0 for a stage without a teacher.
    """
    per_sample = 3 * student_fwd + (0.0 if cached_teacher else teacher_fwd)
    fill = fill_samples * teacher_fwd if cached_teacher else 0.0
    return fill + samples * per_sample
