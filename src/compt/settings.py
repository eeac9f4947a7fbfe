"""The `[data]` and `[[chain]]` settings every paradigm shares (`DataConfig`, `MemberConfig`), which a paradigm's
own extend (`compt.paradigm.Paradigm.data_options`, `member_options`: subclasses), the logit-distillation
temperature that two paradigms share (`LogitDistillMember`), and the range check of every config table.

It sits apart from `compt.config` so that the paradigm registry can check a paradigm's settings class when it
registers without importing the run config (which imports the registry).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from compt.errors import UserError


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where training and evaluation data come from: the settings every paradigm reads
    (`compt.paradigm.Paradigm.open_data`); a paradigm's own `[data]` keys are its subclass of this class
    (`Paradigm.data_options`: the sections below)."""

    kind: str = "synthetic"            # a data kind of the run's paradigm (CLIP: image–caption kinds, docs/data.md;
                                       # language models: "text", "tokens" or "documents", docs/lm.md)
    path: str = ""                     # CSV/TSV file, webdataset shard pattern, dataset root or text corpus
    num_samples: int = 10_000          # training samples (synthetic size; planning size for remote data)
    eval_samples: int = 1_000          # held-out samples for the evaluation
    eval_path: str = ""                # optional held-out set in the format of path; default: a split of `path`
    seed: int = 0                      # dataset generation / split seed
    val_path: str | None = None        # until/target: the validation set, in the format of path (default: carved from
                                       # path by a hash of each sample's key and excluded from training; docs/data.md)
    val_samples: int | None = None     # until/target: samples of the validation split (default: eval_samples; a split
                                       # carved from path takes at most a fifth of what the held-out split leaves)

    @property
    def caption_slots(self) -> int:
        """Caption slots K of one training sample (what `Paradigm.forward_flops` prices): 1 unless the paradigm's
        data has several."""
        return 1

    def check(self) -> None:
        """Range checks of the settings alone (the run config's and `compt eval`'s); whether the kind exists
        and what it needs is the paradigm's check (`Paradigm.chain_rules`). A paradigm's subclass adds its own."""
        check_range("data", self, {"num_samples": (1, None, True), "eval_samples": (1, None, True)})
        if self.val_samples is not None and self.val_samples < 1:
            raise UserError(f"data.val_samples must be at least 1, got {self.val_samples!r}")


@dataclass(frozen=True, kw_only=True)
class MemberConfig:
    """One chain member. The first member trains from scratch; `growth`/`distill` apply to the rest.
    Settings left None are resolved once, by `resolved_member`, into what the stage trains with. A paradigm's own
    `[[chain]]` keys are its subclass of this class (`Paradigm.member_options`: the sections below)."""

    model: str
    epochs: float
    growth: str = "preserve"
    distill: str = "default"           # "default": the paradigm's (fd for CLIP, kl for language models); "none"
    distill_weight: float = 500.0      # α on the summed image+text MSE (the official code's form)
    warmup_steps: int | None = None    # default: train.stage_warmup_steps (train.warmup_steps for member 1)
    lr: float | None = None            # peak learning rate of this member's stage (default: train.lr)
    decay_fraction: float | None = None    # the cosine reaches min_lr after this fraction of the post-warmup
                                           # steps, then stays there (default 1: the whole stage)
    distill_schedule: str | None = None    # α over the stage: constant (default) | linear | cosine (→ 0 at the end)
    schedule: str | None = None            # lr schedule: cosine (default) | wsd (warmup-stable-decay)
    cooldown_shape: str | None = None      # wsd cooldown: linear (default) | sqrt
    init: str | None = None                # member 1 only: start from this checkpoint (compt, plain open_clip, or a
                                           # Hugging Face folder for LMs); epochs = 0 uses it as it is
    shrink: float | None = None            # λ of shrink-and-perturb on the grown weights (default 1; compt.perturb)
    perturb: float | None = None           # σ: plus σ × a fresh init of the child (default 0)
    until: str | None = None               # grown members: "baseline" stops the member at the first probe that
                                           # matches its baseline's validation metrics (epochs is then the cap)
    target: dict[str, float] | None = None  # or stop at these metric values, e.g. {zeroshot_top1 = 40.0}
    probe_every: float | None = None       # epochs between stopping probes (default: a quarter of the cap)
    snr_db: float | None = None            # Gaussian noise on the grown weight matrices at this SNR in dB (default
                                           # none; HyperCloning uses about 10; compt.perturb)
    inherit: str | None = None             # what the member keeps of its grown init, the rest fresh: all (default)
                                           # | vision | text | first:K (the stem and blocks < K; compt.inherit)

    def stage_options(self) -> dict[str, Any]:
        """The `compt.stage.StageSpec` fields the paradigm's own keys resolve to (none here; e.g. CLIP's
        ``patch_dropout``, 0 when unset)."""
        return {}

    def check(self, where: str, has_patches: bool) -> None:
        """Checks of the paradigm's own keys (none here); `has_patches`: the member has image patches to drop
        (`compt.paradigm.ChainRules.patch_tokens`)."""


@dataclass(frozen=True, kw_only=True)
class LogitDistillMember(MemberConfig):
    """A member distilled from its parent's logits by a KL at a temperature (language models, ViT classifiers)."""

    distill_temperature: float | None = None  # temperature τ of the KL between the parent's and the child's logits
                                              # (default 1)

    def stage_options(self) -> dict[str, Any]:
        return {"distill_temperature": self.distill_temperature or 1.0}

    def check(self, where: str, has_patches: bool) -> None:
        if self.distill_temperature is not None and self.distill_temperature <= 0:
            raise UserError(f"{where}: distill_temperature must be positive, got {self.distill_temperature}")


def check_range(where: str, obj: Any, rules: dict[str, tuple[float, float | None, bool]]) -> None:
    """`rules`: field → (lowest, highest or None, lowest allowed?). One-line `UserError` on the first miss;
    NaN and ±inf are in no range (NaN would pass every comparison)."""

    for key, (low, high, closed) in rules.items():
        v = getattr(obj, key)
        if not math.isfinite(v):
            raise UserError(f"{where}.{key} must be a finite number, got {v!r}")
        if (v < low if closed else v <= low) or (high is not None and v > high):
            bound = f"{'at least' if closed else 'above'} {low:g}" + (f" and at most {high:g}" if high else "")
            raise UserError(f"{where}.{key} must be {bound}, got {v!r}")
