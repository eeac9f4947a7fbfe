"""AdamW with open_clip's weight-decay groups, and the per-step cosine schedule with warmup and floor."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from compt.config import COOLDOWN_SHAPES, DISTILL_SCHEDULES, SCHEDULES, TrainConfig


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """open_clip's ``exclude`` rule (open_clip_train/main.py): gains, biases, norms and the logit scale.

    Everything else with ≥ 2 dims is decayed — including, as in open_clip, the token and positional
    embeddings, the tower projections and a distillation projection.
    """
    return param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name


def param_groups(named: Iterable[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed weights and undecayed gains/biases (frozen parameters are left out)."""
    decay, rest = [], []
    for name, p in named:
        if p.requires_grad:
            (rest if no_weight_decay(name, p) else decay).append(p)
    return [{"params": rest, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def build_optimizer(module: nn.Module, train: TrainConfig, *, lr: float | None = None) -> torch.optim.AdamW:
    """AdamW over every trainable parameter of `module` (a task: student and its distillation head).

    `lr` is the stage's resolved peak (`StageSpec.lr`; default ``train.lr`` for optimisers outside a stage);
    the loop sets each step's value with `set_lr`. Parameters on a GPU use the fused CUDA kernel (one launch
    for all tensors); elsewhere torch's default.
    """
    groups = param_groups(module.named_parameters(), train.weight_decay)
    params = [p for g in groups for p in g["params"]]
    fused = bool(params) and all(p.device.type == "cuda" for p in params)
    return torch.optim.AdamW(groups, lr=train.lr if lr is None else lr, betas=(train.beta1, train.beta2),
                             eps=train.eps, fused=fused or None)


def lr_at(step: int, *, base_lr: float, min_lr: float, warmup: int, total: int) -> float:
    """Learning rate of optimizer step `step` (0-based).

    Linear warmup lr·(step+1)/warmup for step < warmup (open_clip's `_warmup_lr`), then a cosine from lr to
    the floor: min_lr + ½(lr − min_lr)(1 + cos(π·e/E)) with e = step − warmup, E = total − warmup.
    """
    if step < warmup:
        return base_lr * (step + 1) / warmup
    span = max(total - warmup, 1)
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * min(step - warmup, span) / span))


def stage_lr_at(step: int, *, base_lr: float, min_lr: float, warmup: int, total: int,
                decay_fraction: float = 1.0) -> float:
    """`lr_at` with a faster decay: the cosine reaches the floor after a fraction f of the post-warmup steps and
    stays there (f = 1: the usual schedule). With E' = warmup + f·(total − warmup), the lr is `lr_at(step,
    total=E')` for step < E' and min_lr after (LEMON's recipe for grown models: same peak, faster decay)."""
    if not 0.0 < decay_fraction <= 1.0:
        raise ValueError(f"decay_fraction must be in (0, 1], got {decay_fraction}")
    end = warmup + max(1, round(decay_fraction * (total - warmup)))
    return lr_at(min(step, end), base_lr=base_lr, min_lr=min_lr, warmup=warmup, total=end)


def wsd_lr_at(step: int, *, base_lr: float, min_lr: float, warmup: int, total: int, cooldown_fraction: float,
              shape: str = "linear") -> float:
    """Warmup–stable–decay: linear warmup, the peak held, then a cooldown over the last fraction f of the
    post-warmup steps (MiniCPM; Hägele et al., NeurIPS 2024). With C = max(1, round(f·(total − warmup))) cooldown
    steps starting at S = total − C::

        step < warmup:  lr·(step + 1)/warmup
        step < S:       lr
        else:           min_lr + (lr − min_lr)·(1 − g(t)),  t = (step − S + 1)/C,  g(t) = t (linear) or √t (sqrt)

    The last step trains at min_lr; stopping the constant phase anywhere and cooling down from there gives the
    schedule of a shorter run, which is what a schedule that can stop early needs."""
    if not 0.0 < cooldown_fraction <= 1.0:
        raise ValueError(f"cooldown fraction must be in (0, 1], got {cooldown_fraction}")
    if shape not in COOLDOWN_SHAPES:
        raise ValueError(f"unknown cooldown shape {shape!r} (known: {', '.join(COOLDOWN_SHAPES)})")
    if step < warmup:
        return base_lr * (step + 1) / warmup
    cool = max(1, round(cooldown_fraction * (total - warmup)))
    start = total - cool
    if step < start:
        return base_lr
    t = min((step - start + 1) / cool, 1.0)
    return min_lr + (base_lr - min_lr) * (1.0 - (math.sqrt(t) if shape == "sqrt" else t))


def schedule_lr_at(step: int, *, schedule: str, base_lr: float, min_lr: float, warmup: int, total: int,
                   decay_fraction: float, shape: str = "linear") -> float:
    """The lr of optimizer step `step` under a stage's schedule: ``cosine`` (`stage_lr_at`, decaying over the
    first `decay_fraction` of the post-warmup steps) or ``wsd`` (`wsd_lr_at`, cooling down over the last)."""
    if schedule == "wsd":
        return wsd_lr_at(step, base_lr=base_lr, min_lr=min_lr, warmup=warmup, total=total,
                         cooldown_fraction=decay_fraction, shape=shape)
    if schedule != "cosine":
        raise ValueError(f"unknown schedule {schedule!r} (known: {', '.join(SCHEDULES)})")
    return stage_lr_at(step, base_lr=base_lr, min_lr=min_lr, warmup=warmup, total=total,
                       decay_fraction=decay_fraction)


def distill_scale(step: int, total: int, schedule: str) -> float:
    """Multiplier s(t) ∈ [0, 1] of the distillation weight at optimizer step `step` of `total` (t = step/total):
    constant s = 1 (the paper); linear s = 1 − t; cosine s = ½(1 + cos πt) — the weight decays to 0 over the
    stage, so the member ends on its own objective (Knowledge Inheritance)."""
    t = min(max(step / max(total, 1), 0.0), 1.0)
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return 1.0 - t
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    raise ValueError(f"unknown distillation schedule {schedule!r} (known: {', '.join(DISTILL_SCHEDULES)})")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
