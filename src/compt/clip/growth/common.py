"""What every CLIP growth operator shares: validation, where a key sits, the expected child shapes and the child
to write into (the helpers every paradigm shares are `compt.growth`)."""

from __future__ import annotations

import functools
import math
import re

import torch

from compt.clip.models import ModelConfig, SwinConfig, build_model
from compt.errors import UserError
from compt.growth import StateDict, assert_shapes, check_shapes, fresh_child, meta_shapes


# ----------------------------------------------------------------------------------------------- validation
def _no_shrink(what: str, a: int | float, b: int | float) -> None:
    if b < a:
        raise UserError(f"{what} {a} -> {b} shrinks")


def _same(what: str, a: object, b: object, why: str) -> None:
    if a != b:
        raise UserError(f"{what} {a} -> {b} differs ({why})")


def validate_growth(parent: ModelConfig, child: ModelConfig) -> None:
    """Refuse growth that is not parent ⊆ child with the same token grid and head dims (one-line `UserError`).

    Image size and context length must match (growth keeps the patch grid, the positional tables and the
    tokenizer), as must patch size, vocabulary and every head dim (attention heads are carried over whole);
    no width, depth, head count, MLP size or embedding size may shrink.
    """
    pv, cv = parent.vision, child.vision
    if parent.is_swin != child.is_swin:
        kind = {True: "Swin", False: "ViT"}
        raise UserError(f"cannot grow a {kind[parent.is_swin]} vision tower ({parent.name}) into a "
                        f"{kind[child.is_swin]} one ({child.name})")
    _same("image size", pv.image_size, cv.image_size, "growth keeps the token grid")
    _same("patch size", pv.patch_size, cv.patch_size, "growth keeps the patch embedding's receptive field")
    if parent.is_swin:
        _validate_swin(pv.swin, cv.swin)
    else:
        _no_shrink("vision width", pv.width, cv.width)
        _no_shrink("vision depth", pv.layers, cv.layers)
        _same("vision head dim", pv.head_width, cv.head_width, "heads are carried over whole")
    _no_shrink("vision MLP width", int(_vision_width(parent) * pv.mlp_ratio), int(_vision_width(child) * cv.mlp_ratio))
    pt, ct = parent.text, child.text
    _same("context length", pt.context_length, ct.context_length, "growth keeps the positional table")
    _same("vocabulary size", pt.vocab_size, ct.vocab_size, "growth keeps the tokenizer")
    _no_shrink("text width", pt.width, ct.width)
    _no_shrink("text depth", pt.layers, ct.layers)
    _same("text head dim", pt.head_width, ct.head_width, "heads are carried over whole")
    _no_shrink("text MLP width", int(pt.width * pt.mlp_ratio), int(ct.width * ct.mlp_ratio))
    _no_shrink("embedding size", parent.embed_dim, child.embed_dim)
    _same("learnable logit bias", parent.init_logit_bias is not None, child.init_logit_bias is not None,
          "both must be trained with the same objective")


def _vision_width(cfg: ModelConfig) -> int:
    return cfg.vision.swin.embed_dim if cfg.vision.swin is not None else cfg.vision.width


def _validate_swin(p: SwinConfig, c: SwinConfig) -> None:
    _same("Swin stage count", len(p.depths), len(c.depths), "stages are carried over one to one")
    _same("Swin window size", p.window_size, c.window_size, "relative position tables are carried over")
    _no_shrink("Swin width", p.embed_dim, c.embed_dim)
    for s, (dp, dc) in enumerate(zip(p.depths, c.depths, strict=True)):
        _no_shrink(f"Swin stage {s} depth", dp, dc)
    for s, (hp, hc) in enumerate(zip(p.num_heads, c.num_heads, strict=True)):
        _no_shrink(f"Swin stage {s} heads", hp, hc)
        _same(f"Swin stage {s} head dim", p.embed_dim * 2**s // hp, c.embed_dim * 2**s // hc,
              "heads are carried over whole")


# ----------------------------------------------------------------------------------------------- layout
_BLOCK = re.compile(r"(?:visual\.)?transformer\.resblocks\.(\d+)\.")
_SWIN = re.compile(r"visual\.trunk\.layers\.(\d+)\.(?:blocks\.(\d+)\.)?")
_HEAD = ("visual.ln_post.", "visual.proj", "visual.trunk.norm.", "visual.head.", "ln_final.", "text_projection")


def key_place(cfg: ModelConfig, key: str) -> tuple[str, float]:
    """(tower, depth) of an open_clip state-dict key (`compt.inherit`): towers "vision" (``visual.*``), "text"
    (the rest) and "" (``logit_scale``, ``logit_bias``: after every block); depth −1 for the stem, i for
    ViT/text block i and for Swin block i counted over the stages (a stage's patch merging sits with its
    first block), ∞ for final norms and projections."""
    if key in ("logit_scale", "logit_bias"):
        return "", math.inf
    tower = "vision" if key.startswith("visual.") else "text"
    if key.startswith(_HEAD):
        return tower, math.inf
    if m := _BLOCK.match(key):
        return tower, float(m.group(1))
    if m := _SWIN.match(key):
        depths = cfg.vision.swin.depths
        return tower, float(sum(depths[: int(m.group(1))]) + int(m.group(2) or 0))
    return tower, -1.0


# ----------------------------------------------------------------------------------------------- shapes
@functools.lru_cache(maxsize=64)
def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Key → shape of `build_model(cfg).state_dict()`."""
    return meta_shapes(build_model, cfg)


def check_state(state: StateDict, cfg: ModelConfig, what: str = "parent") -> None:
    """`UserError` naming the first key that is missing, unexpected or of the wrong shape for `cfg`."""
    check_shapes(state, expected_shapes(cfg), cfg.name, what)


# ----------------------------------------------------------------------------------------------- fresh child
def start_state(cfg: ModelConfig, generator: torch.Generator, fresh: StateDict | None) -> StateDict:
    """The child to write into: `fresh` (checked against `cfg`) or a seeded fresh build."""
    if fresh is None:
        return fresh_child(cfg, generator, build_model)
    check_state(fresh, cfg, what="fresh child")
    return fresh


def assert_child(state: StateDict, cfg: ModelConfig) -> StateDict:
    """Final check of an operator's output against the fresh child's keys and shapes."""
    return assert_shapes(state, expected_shapes(cfg))
