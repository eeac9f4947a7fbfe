"""`StageSpec`: every setting of one training stage, resolved once from the run config.

`compt.chain` resolves one spec per stage (`chain.stage_spec`) and hands it to the trainer, the planner,
the report and the stage's lineage; nothing downstream re-reads ``train.lr`` / ``member.lr``, re-decides
whether a stage distills, or re-derives the caption count from the data. The resolution rules::

    peak lr      = member.lr            if set, else train.lr
    warmup       = member.warmup_steps  if set, else train.warmup_steps (from scratch)
                                                     or train.stage_warmup_steps (grown stage)
    total steps  = ⌈epochs · N / batch_size⌉          (N training samples per epoch)
    warmup       ← min(warmup, total steps)
    distill      = member.distill for a stage with a parent, else "none"; teacher = parent ⇔ distill ≠ "none"
    F_student    = image + K · text forward FLOPs of the student   (K = data.captions_per_image), in training:
                   with patch dropout the image tower runs on the kept patches; one sequence's forward for a
                   language model (`compt.lm.flops`)
    decay        = member.decay_fraction   if set, else 1 (the cosine spans the whole stage)
    α schedule   = member.distill_schedule if set, else "constant"
    patch drop   = member.patch_dropout    if set, else 0 (baselines never drop patches; CLIP ViTs only)
    objective    = "siglip" if train.objective is "siglip", else "clip" (None means clip; `compt.siglip`)
    temperature  = member.distill_temperature if set, else 1 (LM logit distillation)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from compt.config import MemberConfig, TrainConfig
from compt.flops import model_flops
from compt.lm.models import LMConfig
from compt.models import ModelConfig
from compt.siglip import is_siglip


@dataclass(frozen=True, kw_only=True)
class StageSpec:
    """One stage's resolved settings (see the module docstring for how each is derived)."""

    model: ModelConfig | LMConfig   # an open_clip CLIP, or a decoder-only LM (`compt.lm`)
    parent: ModelConfig | LMConfig | None   # the previous chain member (grown stages); None from scratch
    teacher: ModelConfig | LMConfig | None  # the parent when the stage distills, else None
    from_scratch: bool
    epochs: float
    samples: int                    # training samples per epoch (N)
    total_steps: int
    lr: float                       # peak learning rate
    warmup_steps: int
    min_lr: float
    growth: str                     # "none" for a from-scratch stage
    distill: str                    # "none" ⇔ teacher is None
    distill_weight: float
    captions: int                   # caption slots K per image
    seed: int
    student_flops: float            # forward FLOPs per sample (image + K captions)
    teacher_flops: float            # the teacher's, 0 without a teacher
    decay_fraction: float = 1.0     # the lr cosine reaches min_lr after this fraction of the post-warmup steps
    distill_schedule: str = "constant"  # α · s(t) over the stage (`train.optim.distill_scale`)
    patch_dropout: float = 0.0      # fraction of image patches the student drops in training (FLIP)
    objective: str = "clip"         # "clip" (InfoNCE) | "siglip" (sigmoid loss + logit bias)
    distill_temperature: float = 1.0  # τ of LM logit distillation
    train: TrainConfig              # loop settings (optimizer, batch, precision, checkpoints …); its lr,
                                    # min_lr and warmups are already resolved into the fields above

    @property
    def distills(self) -> bool:
        return self.teacher is not None

    @property
    def train_model(self) -> ModelConfig:
        """The student as it trains: `model` with the stage's patch dropout (checkpoints keep `model`)."""
        return with_patch_dropout(self.model, self.patch_dropout)

    @property
    def batch_size(self) -> int:
        return self.train.batch_size

    def summary(self) -> dict:
        """JSON-ready description (lineage, logs): every resolved value except the nested configs."""
        d = {k: v for k, v in asdict(self).items() if k not in ("model", "parent", "teacher", "train")}
        return {**d, "model": self.model.name, "parent": self.parent.name if self.parent else None,
                "teacher": self.teacher.name if self.teacher else None, "batch_size": self.batch_size,
                "steps": self.total_steps}


def with_patch_dropout(model: Any, drop: float) -> Any:
    """`model` as it trains with a fraction `drop` of its image patches dropped (itself when `drop` is 0)."""
    return replace(model, vision=replace(model.vision, patch_dropout=drop)) if drop else model


def forward_flops(model: Any, captions: int) -> float:
    """Forward FLOPs of one sample: an image with `captions` captions, or one sequence of a language model."""
    if isinstance(model, LMConfig):
        from compt.lm.flops import lm_flops

        return lm_flops(model).forward
    return model_flops(model).per_sample(captions)


def resolve_spec(*, model: ModelConfig | LMConfig, member: MemberConfig, train: TrainConfig, from_scratch: bool,
                 parent: ModelConfig | LMConfig | None, samples: int, captions: int) -> StageSpec:
    """The one place a stage's settings are resolved (rules in the module docstring)."""
    parent = None if from_scratch else parent
    distill = "none" if parent is None else member.distill
    teacher = parent if distill != "none" else None
    total = math.ceil(member.epochs * samples / train.batch_size)
    warm = member.warmup_steps if member.warmup_steps is not None else (
        train.warmup_steps if from_scratch else train.stage_warmup_steps)
    drop = member.patch_dropout or 0.0
    trains_as = with_patch_dropout(model, drop)
    return StageSpec(model=model, parent=parent, teacher=teacher, from_scratch=from_scratch, epochs=member.epochs,
                     samples=samples, total_steps=total, lr=member.lr if member.lr is not None else train.lr,
                     warmup_steps=min(warm, total), min_lr=train.min_lr,
                     growth="none" if from_scratch else member.growth, distill=distill,
                     distill_weight=member.distill_weight, captions=captions,
                     objective="siglip" if is_siglip(train.objective) else "clip",
                     distill_temperature=member.distill_temperature or 1.0, seed=train.seed,
                     student_flops=forward_flops(trains_as, captions),
                     decay_fraction=member.decay_fraction or 1.0,
                     distill_schedule=member.distill_schedule or "constant", patch_dropout=drop,
                     teacher_flops=forward_flops(teacher, captions) if teacher else 0.0, train=train)
