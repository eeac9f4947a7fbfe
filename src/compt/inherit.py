"""Partial inheritance: a grown member keeps only part of its grown initial weights, the rest is the child's
fresh initialisation (member option ``inherit``)::

    all       every tensor as grown (the default)
    vision    the vision tower's tensors as grown; the text tower and the tensors of no tower (CLIP's logit
              scale and bias) fresh
    text      the text tower's tensors as grown; the rest fresh
    first:K   in every tower, the stem (embeddings, positional tables, the pre-norm) and blocks 0 … K−1 of the
              child as grown; blocks K, K+1, … and everything after the last block (final norm, projection,
              head, CLIP's logit scale) fresh. The stem is kept because the kept blocks read what it computes;
              K at least a tower's depth keeps all of its blocks (only what follows them is fresh).

Where a tensor sits is its paradigm's answer, ``Paradigm.key_place(cfg, key) -> (tower, depth)``: the tower's
name ("" for none), and the depth −1 for the stem, i inside block i, ∞ after the last block. The towers a
chain's models have are `compt.paradigm.ChainRules.towers` (CLIP: vision, text; language models: none).
A tied language-model head sits with the embedding it is (depth −1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

Place = tuple[str, float]   # (tower, depth): see the module docstring
STEM, HEAD = -1.0, math.inf


@dataclass(frozen=True)
class InheritRule:
    """A parsed ``inherit`` value: keep one tower (`tower`), or the stem and the first `first` blocks."""

    tower: str | None = None
    first: int | None = None

    def keeps(self, place: Place) -> bool:
        tower, depth = place
        if self.tower is not None:
            return tower == self.tower
        return self.first is None or depth < self.first


def parse_inherit(text: str) -> InheritRule:
    """The rule of an ``inherit`` value: ``all``, a tower's name, or ``first:K`` (K a positive integer);
    ValueError naming the accepted forms otherwise."""
    if text == "all":
        return InheritRule()
    kind, _, count = text.partition(":")
    if kind == "first" and count.isdigit() and int(count) > 0:
        return InheritRule(first=int(count))
    if kind and not count and kind.isidentifier() and kind != "first":
        return InheritRule(tower=kind)
    raise ValueError(f"inherit must be all, a tower (vision, text) or first:K with K a positive integer, "
                     f"got {text!r}")


def inherit(grown: dict[str, Tensor], fresh: dict[str, Tensor], rule: InheritRule,
            place: Callable[[str], Place]) -> dict[str, Tensor]:
    """Each tensor from `grown` where `rule` keeps its place, else from `fresh` (same keys and shapes)."""
    if grown.keys() != fresh.keys():
        raise ValueError(f"grown and fresh states differ in keys: {sorted(set(grown) ^ set(fresh))[:4]}")
    if rule == InheritRule():
        return grown
    out = {}
    for key, value in grown.items():
        assert value.shape == fresh[key].shape, (key, value.shape, fresh[key].shape)
        out[key] = value if rule.keeps(place(key)) else fresh[key]
    return out
