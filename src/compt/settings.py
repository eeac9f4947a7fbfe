"""The `[data]` settings every paradigm shares (`DataConfig`), which a paradigm's own extend
(`compt.paradigm.Paradigm.data_options`: a subclass), and the range check of every config table.

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
