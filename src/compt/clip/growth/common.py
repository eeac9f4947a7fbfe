"""What every growth operator shares: validation, the expected child shapes, seeded fresh init, checked writes."""

from __future__ import annotations

import contextlib
import functools
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

import torch

from compt.clip.models import ModelConfig, SwinConfig, build_model
from compt.errors import UserError

Tensor = torch.Tensor
StateDict = dict[str, Tensor]


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
def meta_shapes(build: Callable[[Any], torch.nn.Module], cfg: Any) -> dict[str, tuple[int, ...]]:
    """Key → shape of `build(cfg).state_dict()`, built on the meta device (no memory, no init)."""
    with torch.device("meta"):
        model = build(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@functools.lru_cache(maxsize=64)
def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Key → shape of `build_model(cfg).state_dict()`."""
    return meta_shapes(build_model, cfg)


def check_state(state: StateDict, cfg: ModelConfig, what: str = "parent") -> None:
    """`UserError` naming the first key that is missing, unexpected or of the wrong shape for `cfg`."""
    check_shapes(state, expected_shapes(cfg), cfg.name, what)


def check_shapes(state: StateDict, want: dict[str, tuple[int, ...]], name: str, what: str) -> None:
    """`UserError` naming the first key of `state` that is missing, unexpected or not of shape `want[key]`."""
    for k, shape in want.items():
        if k not in state:
            raise UserError(f"{what} state dict does not match {name}: missing key {k} (expected {list(shape)})")
        if tuple(state[k].shape) != shape:
            raise UserError(f"{what} state dict does not match {name}: {k} has shape {list(state[k].shape)}, "
                            f"expected {list(shape)}")
    extra = [k for k in state if k not in want]
    if extra:
        raise UserError(f"{what} state dict does not match {name}: unexpected key {extra[0]}"
                        + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch single-threaded inside the block (restored after).

    The weight transfer is memory-bound elementwise work plus thin matmuls, and LAPACK's eigh barely
    parallelises; on a shared 2-core box their OpenMP barriers thrash (measured 3–40× slower with 2 threads).
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


# ----------------------------------------------------------------------------------------------- fresh child
def fresh_child(cfg: ModelConfig, generator: torch.Generator, build: Callable[[Any], torch.nn.Module] = build_model
                ) -> StateDict:
    """A freshly initialised child (the library's own init), seeded from `generator`, global RNG untouched."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build(cfg)
    return model.state_dict()


def start_state(cfg: ModelConfig, generator: torch.Generator, fresh: StateDict | None) -> StateDict:
    """The child to write into: `fresh` (checked against `cfg`) or a seeded fresh build."""
    if fresh is None:
        return fresh_child(cfg, generator)
    check_state(fresh, cfg, what="fresh child")
    return fresh


def put(state: StateDict, key: str, value: Tensor, index: tuple | Tensor | None = None) -> None:
    """Write `value` into `state[key]` (or its `index` part) in place, asserting the key and the shape."""
    assert key in state, f"growth produced unknown child key {key}"
    if isinstance(index, Tensor):                                   # row indices: avoid materialising a copy
        shape = (index.numel(), *state[key].shape[1:])
    else:
        shape = tuple((state[key] if index is None else state[key][index]).shape)
    assert shape == tuple(value.shape), f"{key}: writing {tuple(value.shape)} into {shape}"
    with torch.no_grad():
        if index is None:
            state[key].copy_(value.to(state[key].dtype))
        else:
            state[key][index] = value.to(state[key].dtype)


def assert_child(state: StateDict, cfg: ModelConfig) -> StateDict:
    """Final check of an operator's output against the fresh child's keys and shapes."""
    return assert_shapes(state, expected_shapes(cfg))


def assert_shapes(state: StateDict, want: dict[str, tuple[int, ...]]) -> StateDict:
    """Assert that `state` has exactly the keys of `want`, each of that shape."""
    assert set(state) == set(want), sorted(set(state) ^ set(want))[:5]
    for k, v in state.items():
        assert tuple(v.shape) == want[k], (k, tuple(v.shape), want[k])
    return state


def interleave(parent_layers: int, child_layers: int) -> list[int]:
    """Child position of each parent block when new blocks are spread evenly: i → ⌊i · L' / L⌋."""
    return [i * child_layers // parent_layers for i in range(parent_layers)]
