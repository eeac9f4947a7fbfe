"""Shrink and perturb a grown member's initial weights (Ash & Adams, "On Warm-Starting Neural Network
Training", NeurIPS 2020): a warm-started model generalises worse than a fresh one, and shrinking the weights
toward zero while adding a little fresh-init noise closes the gap. On a grown CoM-PT member it trades the
exact start (function preservation) for a start away from the parent's solution::

    θ ← λ · θ_grown + σ · θ_fresh        for every tensor with at least one dimension

λ = `shrink` (1: unchanged), σ = `perturb` (0: no noise), θ_fresh a fresh initialisation of the child drawn
from its own seeded generator (the stage's seed + `FRESH_SEED_OFFSET`, so it differs from the fresh parts the
growth operator drew). 0-d tensors (CLIP's learnable temperature) keep their grown value. λ = 1, σ = 0 is the
growth operator's state, bit for bit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

FRESH_SEED_OFFSET = 104_729   # the fresh init of the perturbation is not the growth operator's


def shrink_perturb(grown: dict[str, Tensor], fresh: dict[str, Tensor], *, shrink: float,
                   perturb: float) -> dict[str, Tensor]:
    """λ · grown + σ · fresh per tensor (module docstring); both state dicts must have the same keys and shapes."""
    if grown.keys() != fresh.keys():
        raise ValueError(f"grown and fresh states differ in keys: {sorted(set(grown) ^ set(fresh))[:4]}")
    if shrink == 1.0 and perturb == 0.0:
        return grown
    out = {}
    for key, value in grown.items():
        assert value.shape == fresh[key].shape, (key, value.shape, fresh[key].shape)
        if value.ndim == 0 or not value.is_floating_point():
            out[key] = value
        else:
            out[key] = shrink * value + perturb * fresh[key].to(value.dtype)
    return out
