"""`ChainRules`: what a chain of one model kind allows (`compt.config.validate` checks a run against them).

CLIP chains get theirs from `compt.config.chain_rules`, language-model chains from `compt.lm.rules`. This
module imports nothing else of compt, so both sides can build one without an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ChainRules:
    """A chain's resolved member configs, their forward FLOPs, growth operators, distillation losses and the
    pairwise growth check."""

    configs: list[Any]
    flops: list[float]
    growth_ops: tuple[str, ...]
    distill_losses: tuple[str, ...]
    validate_growth: Callable[[Any, Any], None]
