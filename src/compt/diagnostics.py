"""How far a grown member moves from its parent during its stage (recorded in the stage's result.json).

For each named representation the run data offers (`compt.paradigm.RunData.representations`: CLIP, the held-out
retrieval split's image and caption embeddings; a language model, each held-out window's mean final hidden
state), the linear CKA (Kornblith et al., 2019) between the parent and the member at the start of the stage
(its grown init) and at its end::

    CKA(X, Y) = ‖Yᶜᵀ Xᶜ‖_F² / (‖Xᶜᵀ Xᶜ‖_F · ‖Yᶜᵀ Yᶜ‖_F)        Xᶜ, Yᶜ: the (N, d) matrices, columns centred

(1: the same representation up to rotation and scale; widths may differ), and the relative size of the stage's
update in parameter space, ‖θ_end − θ_start‖ / ‖θ_start‖ over every floating tensor. A member whose CKA stays
near 1 never left its parent's function; one that falls has moved away from it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from compt.paradigm import Paradigm, RunData


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of (N, d1) and (N, d2) representations of the same N inputs (module docstring)."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same inputs: {x.shape[0]} vs {y.shape[0]} rows")
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    cross = (y.T @ x).norm() ** 2
    return float(cross / ((x.T @ x).norm() * (y.T @ y).norm()).clamp_min(1e-30))


def relative_update(start: dict[str, torch.Tensor], end: dict[str, torch.Tensor]) -> float:
    """‖θ_end − θ_start‖ / ‖θ_start‖ over the floating tensors of two state dicts of one model."""
    keys = [k for k, v in start.items() if v.is_floating_point()]
    change = sum(float((end[k].double() - start[k].double()).pow(2).sum()) for k in keys)
    size = sum(float(start[k].double().pow(2).sum()) for k in keys)
    return (change / max(size, 1e-30)) ** 0.5


def parent_distance(paradigm: Paradigm, data: RunData, *, parent_cfg: Any, parent: dict[str, torch.Tensor],
                    child_cfg: Any, start: dict[str, torch.Tensor], end: dict[str, torch.Tensor]) -> dict[str, float]:
    """``cka_<name>_start``, ``cka_<name>_end`` per representation and ``update_norm`` (module docstring)."""
    with torch.random.fork_rng(devices=[]):   # representations draw nothing, but stay off the stage's stream
        ref = data.representations(paradigm.create(parent_cfg, parent), parent_cfg)
        first = data.representations(paradigm.create(child_cfg, start), child_cfg)
        last = data.representations(paradigm.create(child_cfg, end), child_cfg)
    out = {}
    for name in ref:
        out[f"cka_{name}_start"] = linear_cka(ref[name], first[name])
        out[f"cka_{name}_end"] = linear_cka(ref[name], last[name])
    out["update_norm"] = relative_update(start, end)
    return out
