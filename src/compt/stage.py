"""`StageSpec`: every setting of one training stage, resolved once from the run config.

`compt.chain` resolves one spec per stage (`chain.stage_spec`) and hands it to the trainer, the planner,
the report and the stage's lineage; nothing downstream re-reads ``train.lr`` / ``member.lr``, re-decides
whether a stage distills, or re-derives the caption count from the data. The resolution rules::

    peak lr      = member.lr            if set, else train.lr
    warmup       = member.warmup_steps  if set, else train.warmup_steps (from scratch)
                                                     or train.stage_warmup_steps (grown stage)
    total steps  = ⌈epochs · N / batch_size⌉          (N training samples per epoch)
    warmup       ← min(warmup, total steps)
    distill      = member.distill (resolved: the paradigm's default when unset) for a stage with a parent,
                   else "none"; teacher = parent ⇔ distill ≠ "none"
    F_student    = the paradigm's forward FLOPs of one training sample of the student as it trains
                   (`Paradigm.forward_flops`: CLIP, image + K · text with K = data.captions_per_image and the
                   image tower on the kept patches under patch dropout; a language model, one sequence)
    schedule     = member.schedule         if set, else "wsd" for a member that stops (until/target), else
                   "cosine"; cooldown shape (wsd) member.cooldown_shape if set, else "linear"
    stopping     = "target" when member.target is set, "baseline" for until = "baseline" (its values are filled
                   in by the chain runner from the baseline's validation metrics), "record" for a baseline under
                   the time-to-target protocol (probes, never stops: `compt.parity`), else "" (train every epoch);
                   probe_every = member.probe_every if set, else a quarter of the epochs (the cap)
    decay        = member.decay_fraction   if set, else 1 for cosine (the cosine spans the whole stage) and
                   0.2 for wsd (the cooldown is the last 20 % of the post-warmup steps)
    α schedule   = member.distill_schedule if set, else "constant"
    patch drop   = member.patch_dropout    if set, else 0 (baselines never drop patches; CLIP ViTs only: its
                   `ClipMemberConfig.stage_options`)
    shrink, σ    = member.shrink / member.perturb if set, else 1 / 0 (`compt.perturb`; grown stages only)
    SNR noise    = member.snr_db if set, else None: no noise (`compt.perturb`; grown stages only)
    inherit      = member.inherit if set, else "all" (`compt.inherit`; grown stages only)
    objective    = the paradigm's reading of train.objective (CLIP: "clip" or "siglip"; LMs: "next-token")
    paradigm     = the name of the members' paradigm (`compt.paradigm.paradigm_of`), looked up once here
    temperature  = member.distill_temperature if set, else 1 (logit distillation of language models and ViT
                   classifiers: `compt.settings.LogitDistillMember.stage_options`)
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from compt.config import MemberConfig, TrainConfig
from compt.paradigm import Paradigm, paradigm_of
from compt.parity import RECORD

WSD_COOLDOWN = 0.2   # a wsd member's default decay_fraction (Hägele et al. 2024: a 10-20 % cooldown)


@dataclass(frozen=True, kw_only=True)
class StageSpec:
    """One stage's resolved settings (see the module docstring for how each is derived)."""

    paradigm: str                   # the members' paradigm (`compt.paradigm.paradigm_named`)
    model: Any                      # the paradigm's model config of the student
    train_model: Any                # `model` as the student trains (patch dropout applied; checkpoints keep `model`)
    parent: Any                     # the previous chain member (grown stages); None from scratch
    teacher: Any                    # the parent when the stage distills, else None
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
    objective: str = "clip"         # the paradigm's task objective (CLIP: "clip" InfoNCE | "siglip")
    distill_temperature: float = 1.0  # τ of LM logit distillation
    schedule: str = "cosine"        # lr schedule: cosine | wsd (`compt.train.optim.schedule_lr_at`)
    cooldown_shape: str = "linear"  # wsd cooldown: linear | sqrt
    shrink: float = 1.0             # λ of shrink-and-perturb on the grown init (`compt.perturb`)
    perturb: float = 0.0            # σ of shrink-and-perturb
    until: str = ""                 # stopping rule: "" | "baseline" | "target" | "record" (`compt.train.stopping`)
    target: dict[str, float] = field(default_factory=dict)  # metric → value to reach on the validation split
    probe_every: float = 0.0        # epochs between stopping probes (0 without a stopping rule)
    snr_db: float | None = None     # SNR in dB of the noise on the grown weight matrices (None: no noise)
    inherit: str = "all"            # what the grown init keeps, the rest fresh (`compt.inherit`)
    train: TrainConfig              # loop settings (optimizer, batch, precision, checkpoints …); its lr,
                                    # min_lr and warmups are already resolved into the fields above

    @property
    def distills(self) -> bool:
        return self.teacher is not None

    @property
    def batch_size(self) -> int:
        return self.train.batch_size

    def summary(self) -> dict:
        """JSON-ready description (lineage, logs): every resolved value except the nested configs."""
        nested = ("model", "train_model", "parent", "teacher", "train", "paradigm")
        d = {k: v for k, v in asdict(self).items() if k not in nested}
        return {**d, "model": self.model.name, "parent": self.parent.name if self.parent else None,
                "teacher": self.teacher.name if self.teacher else None, "batch_size": self.batch_size,
                "steps": self.total_steps}


def stops(cfg: Any) -> bool:
    """Whether a member of run config `cfg` trains until a target (``until`` / ``target``): the one answer to "does
    this run read a validation split?" — the paradigms carve theirs out of the training data only then."""
    return any(m.until is not None or m.target is not None for m in cfg.chain)


def resolve_spec(*, model: Any, member: MemberConfig, train: TrainConfig, from_scratch: bool, parent: Any,
                 samples: int, captions: int, paradigm: Paradigm | None = None) -> StageSpec:
    """The one place a stage's settings are resolved (rules in the module docstring). `member` is resolved
    (`compt.config.resolved_member`); `paradigm` defaults to the one that owns `model`."""
    p = paradigm or paradigm_of(model.name)
    parent = None if from_scratch else parent
    distill = "none" if parent is None else (p.default_distill if member.distill == "default" else member.distill)
    teacher = parent if distill != "none" else None
    total = math.ceil(member.epochs * samples / train.batch_size)
    warm = member.warmup_steps if member.warmup_steps is not None else (
        train.warmup_steps if from_scratch else train.stage_warmup_steps)
    own = member.stage_options()   # the paradigm's own keys, resolved (`MemberConfig.stage_options`)
    drop = own.get("patch_dropout", 0.0)
    until = (member.until if member.until == RECORD else "") if from_scratch else \
        ("target" if member.target else member.until or "")
    trains_as = p.trains_as(model, drop)
    return StageSpec(paradigm=p.name, model=model, train_model=trains_as, parent=parent, teacher=teacher,
                     from_scratch=from_scratch, epochs=member.epochs, samples=samples, total_steps=total,
                     lr=member.lr if member.lr is not None else train.lr, warmup_steps=min(warm, total),
                     min_lr=train.min_lr, growth="none" if from_scratch else member.growth, distill=distill,
                     distill_weight=member.distill_weight, captions=captions, objective=p.objective(train.objective),
                     seed=train.seed,
                     student_flops=p.forward_flops(trains_as, captions),
                     decay_fraction=member.decay_fraction or (
                         WSD_COOLDOWN if member.schedule == "wsd" or until else 1.0),
                     schedule=member.schedule or ("wsd" if until else "cosine"),
                     cooldown_shape=member.cooldown_shape or "linear", until=until, target=dict(member.target or {}),
                     probe_every=(member.probe_every or member.epochs / 4) if until else 0.0,
                     distill_schedule=member.distill_schedule or "constant",
                     shrink=1.0 if from_scratch or member.shrink is None else member.shrink,
                     perturb=0.0 if from_scratch or member.perturb is None else member.perturb,
                     snr_db=None if from_scratch else member.snr_db,
                     inherit="all" if from_scratch or member.inherit is None else member.inherit,
                     teacher_flops=p.forward_flops(teacher, captions) if teacher else 0.0, train=train, **own)


def teacher_cache_folder(train: TrainConfig, out_dir: Path) -> Path:
    """Where the stage writing into `out_dir` keeps its teacher-cache files: ``out_dir/teacher_cache``, or with
    ``train.teacher_cache_dir`` a folder on that (node-local) disk named after the stage folder and a hash of
    its absolute path, so stages of two runs never share one. The trainer deletes it on every node once the
    stage's result is written; until then a resumed stage maps the files again instead of refilling them."""
    if not train.teacher_cache_dir:
        return out_dir / "teacher_cache"
    key = hashlib.sha256(str(out_dir.resolve()).encode()).hexdigest()[:12]
    return Path(train.teacher_cache_dir).expanduser() / f"{out_dir.name}-{key}"
