"""`FinetuneConfig`: the settings of one fine-tune, shared by the paradigms that fine-tune (CLIP image towers, ViT
classifiers); no torch here, so the command line builds without it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from compt.errors import UserError

MODES = ("full", "linear")


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig:
    """The recipe's settings; the defaults are sized for the tiny CPU members (a few thousand images, minutes)."""

    mode: str = "full"             # full: tower + head; linear: frozen tower, trained head
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3               # peak lr of the head (layer l: lr · layer_decay^(L + 1 − l))
    min_lr: float = 1e-6           # cosine floor
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    layer_decay: float = 0.75      # 1 = the same lr everywhere
    label_smoothing: float = 0.1
    ema: float = 0.0               # EMA decay of the weights evaluated (0 = off; e.g. 0.999)
    train_samples: int = 5000      # at most this many training images
    eval_samples: int = 1000       # held-out images (at most; an image folder holds out min(this, n // 5))
    seed: int = 0                  # data draw, split and order

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"unknown fine-tuning mode {self.mode!r} (known: {', '.join(MODES)})")
        for name, value in asdict(self).items():   # NaN passes every comparison below, inf most of them
            if isinstance(value, float) and not math.isfinite(value):
                raise UserError(f"fine-tuning {name} must be a finite number, got {value}")
        for name in ("epochs", "batch_size", "train_samples", "eval_samples"):
            if getattr(self, name) < 1:
                raise UserError(f"fine-tuning {name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise UserError(f"fine-tuning needs 0 ≤ min_lr ≤ lr and lr > 0, got lr {self.lr}, min_lr {self.min_lr}")
        checks = (("layer_decay", 0 < self.layer_decay <= 1, "in (0, 1]"),
                  ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
                  ("ema", 0 <= self.ema < 1, "in [0, 1)"), ("warmup_epochs", self.warmup_epochs >= 0, "≥ 0"),
                  ("weight_decay", self.weight_decay >= 0, "≥ 0"))
        for name, ok, rule in checks:
            if not ok:
                raise UserError(f"fine-tuning {name} must be {rule}, got {getattr(self, name)}")

    def settings(self) -> dict[str, Any]:
        return asdict(self)
