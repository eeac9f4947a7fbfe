"""`corner`: the CoM-PT paper's official parameter-space transfer, reproduced exactly — defects included.

Rule (SPEC §3): every parent tensor is written into the leading corner of the child tensor with the same
key; everything else keeps the child's fresh (seeded) random init. No scaling, no noise:

    0-d  child = parent                  (logit_scale is inherited)
    1-d  child[:n] = parent              (biases, LayerNorm γ/β, class embedding)
    2-d  child[:r, :c] = parent          (linear weights, positional/token embeddings, projections)
    4-d  child[:o, :i, :h, :w] = parent  (patch conv: only the output channels grow)

Depth: the vision tower maps block i → i, except when the child's vision depth is exactly twice the parent's,
then block i → 2i and 2i+1. The text tower is always 1:1 (extra blocks stay fresh). Swin keys are never
depth-mapped (stage s, block b → stage s, block b; relative-position tables get their first `heads` columns).

This is NOT function-preserving. Its known defects are kept on purpose, because it is the baseline the
paper's numbers come from: the fused q;k;v matrix [3w, w] is sliced as one block, so for a wider child the
parent's k and v rows land inside the child's q (and k) block instead of their own; widened LayerNorms
average over fresh channels; depth growth only works for exactly ×2 and only in the vision tower. Right after
growth the child's embeddings have cosine ≈ 0.6–0.74 (image) and 0.07–0.23 (text) with the parent's (paper).
"""

from __future__ import annotations

import re

import torch

from compt.clip.growth.common import assert_child, start_state
from compt.clip.models import ModelConfig
from compt.growth import StateDict, corner_copy, one_thread, put

_VISUAL_BLOCK = re.compile(r"^visual\.transformer\.resblocks\.(\d+)\.(.*)$")


def corner_targets(key: str, parent: ModelConfig, child: ModelConfig) -> list[str]:
    """Child keys a parent key is copied into (the official depth rule: ×2 vision depth → 2i and 2i+1)."""
    m = _VISUAL_BLOCK.match(key)
    if m is None or parent.is_swin or child.vision.layers != 2 * parent.vision.layers:
        return [key]
    i, rest = int(m.group(1)), m.group(2)
    return [f"visual.transformer.resblocks.{j}.{rest}" for j in (2 * i, 2 * i + 1)]


def corner(parent_state: StateDict, parent_cfg: ModelConfig, child_cfg: ModelConfig, *,
           generator: torch.Generator, fresh: StateDict | None = None) -> StateDict:
    """The paper's corner copy (see module docstring); `fresh` is the child to write into (else a seeded build)."""
    child = start_state(child_cfg, generator, fresh)
    with one_thread():
        for key, value in parent_state.items():
            for target in corner_targets(key, parent_cfg, child_cfg):
                assert target in child, f"corner: parent key {key} has no child key {target}"
                if value.dim() == 0:
                    put(child, target, value)
                else:
                    corner_copy(child[target], value)
    return assert_child(child, child_cfg)
