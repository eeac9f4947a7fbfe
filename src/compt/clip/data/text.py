"""Captions: deterministic multi-caption sampling (and `tokenize`, re-exported from `compt.clip.tokenizer`).

Multi-caption slots follow the official CoM-PT recipe: slot 0 is the raw caption, slots 1…K-1 are sentences
sampled from the image's long captions. Sampling is a pure function of ``(seed, index)`` — the same image
always gets the same K captions — so a frozen teacher's text embeddings can be cached per index (the
official code re-samples every epoch; here diversity comes from the pool, not from the epoch).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from compt.clip.tokenizer import tokenize

__all__ = ["caption_rng", "sample_captions", "split_sentences", "template_captions", "tokenize"]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> list[str]:
    """Split a long caption into sentences (on . ! ? followed by whitespace); empty pieces are dropped."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def caption_rng(seed: int, index: int, stream: int = 0) -> random.Random:
    """The per-sample RNG every deterministic caption choice uses: a function of (seed, stream, index) only."""
    return random.Random((seed * 1_000_003 + stream) * 4_294_967_311 + index)


def sample_captions(captions: Sequence[str], k: int, *, seed: int, index: int) -> list[str]:
    """K caption slots for one image: the raw caption + K-1 sentences drawn from its long captions.

    ``captions[0]`` is the raw caption; the sentences of ``captions[1:]`` form the pool. Slots 1…K-1 are
    drawn without replacement while the pool lasts (then the pool is reshuffled and drawn again); an empty
    pool repeats the raw caption. Deterministic in ``(seed, index)``.
    """
    if not captions:
        raise ValueError("a sample needs at least one caption")
    raw = captions[0]
    pool = [s for c in captions[1:] for s in split_sentences(c)]
    if k <= 1:
        return [raw]
    if not pool:
        return [raw] * k
    rng = caption_rng(seed, index)
    out: list[str] = []
    while len(out) < k - 1:
        order = list(pool)
        rng.shuffle(order)
        out.extend(order[: k - 1 - len(out)])
    return [raw, *out]


def template_captions(classname: str, templates: Sequence[str], k: int, *, seed: int, index: int) -> list[str]:
    """K distinct template captions of one class name (cycling when K > len(templates)), fixed per index."""
    order = list(range(len(templates)))
    caption_rng(seed, index, stream=1).shuffle(order)
    return [templates[order[j % len(order)]].format(classname) for j in range(k)]
