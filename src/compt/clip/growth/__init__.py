"""Growth operators: parameter-space transfer from a trained family member to a larger one (SPEC §3).

An operator is a pure function ``(parent_state, parent_cfg, child_cfg, *, generator) -> child_state`` over
open_clip state dicts. It starts from a freshly initialised child (seeded from `generator`, or the `fresh`
state dict it is given) and overwrites it from the parent, asserting every key and shape it writes against
the child's `build_model(child_cfg).state_dict()`. Operators are chosen by name from `GROWTH_OPS`:

- ``corner``   the paper's official rule (corner copy; not function-preserving) — `compt.clip.growth.corner`
- ``preserve`` exact function-preserving growth (any width/head/depth ratio, both ViT towers)
- ``stack``    `preserve`'s exact widening + depth by progressive stacking (ablation of the depth rule)
- ``split``    exact like `preserve`, new heads and units as unequal splits of the parent's (LEMON-style),
  inserted blocks as cancelling pairs — `compt.clip.growth.split`

`grow` is the single entry point: it validates the pair (`validate_growth`), checks that the parent state
really has the parent's shapes (`check_state`) and runs the operator with ``Generator().manual_seed(seed)``.
"""

from __future__ import annotations

from typing import Protocol

import torch

from compt.clip.growth.common import check_state, expected_shapes, validate_growth
from compt.clip.growth.corner import corner
from compt.clip.growth.preserve import check_supported, preserve, stack
from compt.clip.growth.split import split
from compt.clip.models import ModelConfig
from compt.errors import unknown_name
from compt.growth import StateDict


class GrowthOp(Protocol):
    def __call__(self, parent_state: StateDict, parent_cfg: ModelConfig, child_cfg: ModelConfig, *,
                 generator: torch.Generator, fresh: StateDict | None = None) -> StateDict: ...


GROWTH_OPS: dict[str, GrowthOp] = {"corner": corner, "preserve": preserve, "stack": stack, "split": split}


def get_operator(name: str) -> GrowthOp:
    if name not in GROWTH_OPS:
        raise unknown_name("growth operator", name, GROWTH_OPS)
    return GROWTH_OPS[name]


def validate_pair(parent_cfg: ModelConfig, child_cfg: ModelConfig, op: str) -> None:
    """Everything `grow` would refuse for this pair and operator, checked without weights (run validation)."""
    get_operator(op)
    validate_growth(parent_cfg, child_cfg)
    if op != "corner":
        check_supported(op, parent_cfg, child_cfg)


def grow(parent_state: StateDict, parent_cfg: ModelConfig, child_cfg: ModelConfig, op: str, seed: int = 0,
         *, fresh: StateDict | None = None) -> StateDict:
    """Grow `child_cfg`'s initial weights from a parent state dict with operator `op` (deterministic in `seed`)."""
    fn = get_operator(op)
    validate_growth(parent_cfg, child_cfg)
    check_state(parent_state, parent_cfg)
    return fn(parent_state, parent_cfg, child_cfg, generator=torch.Generator().manual_seed(seed), fresh=fresh)


__all__ = ["GROWTH_OPS", "GrowthOp", "check_state", "expected_shapes", "get_operator", "grow", "validate_growth",
           "validate_pair"]
