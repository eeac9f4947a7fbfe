"""Growth helpers every paradigm shares (`compt.clip.growth`, `compt.lm.growth`, `compt.prune`'s operators): the
expected shapes of a state dict and their checks, single-threaded transfer, a seeded fresh child, checked in-place
writes, corner copies and the depth maps of a deeper child.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

from compt.errors import UserError

Tensor = torch.Tensor
StateDict = dict[str, Tensor]
DepthRule = Callable[[int, int], list[int | None]]   # (parent L, child L') → source block per child block


# ----------------------------------------------------------------------------------------------- shapes
def meta_shapes(build: Callable[[Any], torch.nn.Module], cfg: Any) -> dict[str, tuple[int, ...]]:
    """Key → shape of `build(cfg).state_dict()`, built on the meta device (no memory, no init)."""
    with torch.device("meta"):
        model = build(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


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


def assert_shapes(state: StateDict, want: dict[str, tuple[int, ...]]) -> StateDict:
    """Assert that `state` has exactly the keys of `want`, each of that shape."""
    assert set(state) == set(want), sorted(set(state) ^ set(want))[:5]
    for k, v in state.items():
        assert tuple(v.shape) == want[k], (k, tuple(v.shape), want[k])
    return state


# ----------------------------------------------------------------------------------------------- writing a child
def fresh_child(cfg: Any, generator: torch.Generator, build: Callable[[Any], torch.nn.Module]) -> StateDict:
    """A freshly initialised child `build(cfg)` (the library's own init), seeded from `generator`, global RNG
    untouched."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build(cfg)
    return model.state_dict()


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


def corner_copy(dst: torch.Tensor, src: torch.Tensor) -> None:
    """dst[:s0, :s1, …] = src in place (dst at least as large as src in every dim, same number of dims)."""
    assert dst.dim() == src.dim() and all(d >= s for d, s in zip(dst.shape, src.shape, strict=True)), \
        (tuple(dst.shape), tuple(src.shape))
    with torch.no_grad():
        dst[tuple(slice(0, n) for n in src.shape)] = src.to(dst.dtype)


# ----------------------------------------------------------------------------------------------- depth
def interleave(parent_layers: int, child_layers: int) -> list[int]:
    """Child position of each parent block when new blocks are spread evenly: i → ⌊i · L' / L⌋."""
    return [i * child_layers // parent_layers for i in range(parent_layers)]


def identity_depth(parent_layers: int, child_layers: int) -> list[int | None]:
    """Parent block i → child block ⌊i L'/L⌋; None marks an inserted identity block."""
    src: list[int | None] = [None] * child_layers
    for i, j in enumerate(interleave(parent_layers, child_layers)):
        src[j] = i
    return src


def stacked_depth(parent_layers: int, child_layers: int) -> list[int | None]:
    """Child block j ← parent block j mod L (progressive stacking)."""
    return [j % parent_layers for j in range(child_layers)]
