"""Image–caption datasets shared by every source, and the bad-data policy.

A source (CSV, shards, folders, the real-data adapters) produces `Record`s: an image reference and its
captions. `build_pairs` turns records into a `PairDataset`:

- records with no non-empty caption or a missing image file are dropped at index time;
- sets of at most ``data.predecode_max`` images are decoded once, up front (undecodable images dropped),
  and kept as uint8 tensors with pre-tokenised caption slots — the fast path;
- larger sets decode lazily in DataLoader workers; an image that fails there is replaced by the next good
  index (a deterministic substitute) and counted.

Every drop is counted; a warning names the first few offenders, and more than ``data.max_bad_fraction``
bad samples is a `UserError`.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from compt.clip.data.images import ImageRef, TarMember, TensorImages, decode_all, describe, load_image, normalize
from compt.clip.data.text import sample_captions, tokenize
from compt.clip.settings import ClipDataConfig
from compt.errors import UserError

log = logging.getLogger("compt.clip.data")
_SHOW = 5  # offending paths named in a report
_WARNED: set[str] = set()  # bad-sample reports already given by this process (a run builds its data per stage)


@dataclass(frozen=True)
class Record:
    """One image and its captions (``captions[0]`` raw; the rest long captions / extra variants)."""

    image: ImageRef
    captions: tuple[str, ...]
    key: str = ""      # what names the sample in its source (`compt.clip.data.carve`): a CSV filepath, a __key__


class BadData:
    """Counts skipped samples of one source and enforces ``max_bad_fraction``."""

    def __init__(self, source: str, max_fraction: float) -> None:
        self.source, self.max_fraction = source, max_fraction
        self.items: list[tuple[str, str]] = []  # (what, why)
        self.total = 0                          # samples in the whole source (set once it is read)

    def copy(self, source: str) -> BadData:
        """The same counts under another name (a split adds its own decode failures to its source's)."""
        out = BadData(source, self.max_fraction)
        out.items, out.total = list(self.items), self.total
        return out

    def add(self, what: str, why: str) -> None:
        self.items.append((what, why))

    def __len__(self) -> int:
        return len(self.items)

    def summary(self, total: int) -> str:
        first = "; ".join(f"{w} ({y})" for w, y in self.items[:_SHOW])
        more = f"; … {len(self.items) - _SHOW} more" if len(self.items) > _SHOW else ""
        return (f"{self.source}: {len(self.items)} of {total} samples ({100 * len(self.items) / max(total, 1):.2f}%)"
                f" are bad and were skipped: {first}{more}")

    def check(self, total: int) -> None:
        """Warn about any bad samples; `UserError` when they exceed the allowed fraction."""
        if not self.items:
            return
        if len(self.items) > self.max_fraction * total:
            raise UserError(f"{self.summary(total)} — more than data.max_bad_fraction = {self.max_fraction:g}")
        summary = self.summary(total)
        if summary not in _WARNED:
            _WARNED.add(summary)
            log.warning(summary)


def clean_records(records: Sequence[Record], bad: BadData) -> list[Record]:
    """Drop records with no non-empty caption or a missing image file (index-time checks)."""
    out = []
    for rec in records:
        captions = tuple(c.strip() for c in rec.captions if c and c.strip())
        if not captions:
            bad.add(describe(rec.image), "empty caption")
        elif isinstance(rec.image, str) and not os.path.isfile(rec.image):
            bad.add(rec.image or "<empty path>", "missing file")
        elif isinstance(rec.image, TarMember) and rec.image.size == 0:
            bad.add(str(rec.image), "empty file")
        else:
            out.append(Record(rec.image, captions, rec.key))
    return out


class LazyImages(torch.utils.data.Dataset):
    """Decode on access (for sets too large to pre-decode); a failing image is replaced by the next good one."""

    def __init__(self, refs: Sequence[ImageRef], size: int, bad: BadData) -> None:
        self.refs, self.size, self.bad = list(refs), size, bad
        self.substituted: dict[int, int] = {}
        self.known_bad: set[int] = set()  # per process (each DataLoader worker counts its own)

    def __len__(self) -> int:
        return len(self.refs)

    def resolve(self, i: int) -> tuple[int, torch.Tensor]:
        """(index actually used, uint8 image) — i itself, or the first decodable index after it."""
        for step in range(len(self.refs)):
            j = (i + step) % len(self.refs)
            if j in self.known_bad:
                continue
            try:
                image = load_image(self.refs[j], self.size)
            except Exception as e:  # corrupt data: substitute deterministically and count it
                self._record(j, e)
                continue
            if j != i:
                self.substituted[i] = j
            return j, image
        raise UserError(f"{self.bad.source}: no decodable image at all")

    def _record(self, j: int, err: Exception) -> None:
        self.known_bad.add(j)
        self.bad.add(describe(self.refs[j]), f"{type(err).__name__}: {str(err)[:100]}")
        if len(self.bad) > self.bad.max_fraction * len(self.refs):
            raise UserError(f"{self.bad.summary(len(self.refs))} — more than data.max_bad_fraction = "
                            f"{self.bad.max_fraction:g} (found while loading)")
        if len(self.bad) <= _SHOW:
            log.warning("%s: unreadable image %s replaced by a neighbour", self.bad.source, describe(self.refs[j]))

    def __getitem__(self, i: int) -> torch.Tensor:
        return normalize(self.resolve(i)[1])


class PairDataset(torch.utils.data.Dataset):
    """Item i → (image float (3, H, W) normalised, tokens long (K, context_length), i).

    ``tokens`` is either a pre-tokenised int tensor (N, K, ctx) or None, in which case the K slots are
    sampled from ``captions[i]`` (`sample_captions`, deterministic in (seed, i)) and tokenised on access.
    `uint8_view` gives the same items with uint8 images (a quarter of the bytes through the loader and the
    host-to-device copy; the consumer normalises on its device with `compt.clip.data.images.to_model_input`).
    """

    deterministic = True  # no augmentation, caption slots fixed per index: teacher outputs can be cached
    normalized = True     # False in a `uint8_view`

    def __init__(self, images: torch.utils.data.Dataset, *, tokens: torch.Tensor | None = None,
                 captions: Sequence[tuple[str, ...]] | None = None, k: int = 1, context_length: int = 77,
                 seed: int = 0, name: str = "") -> None:
        if tokens is None and captions is None:
            raise ValueError("PairDataset needs tokens or captions")
        self.images, self.tokens, self.captions = images, tokens, captions
        self.k, self.context_length, self.seed, self.name = k, context_length, seed, name

    def __len__(self) -> int:
        return len(self.images)

    def caption_slots(self, i: int) -> list[str]:
        """The K caption strings of item i (lazy sets only)."""
        assert self.captions is not None
        return sample_captions(self.captions[i], self.k, seed=self.seed, index=i)

    def _tokens(self, i: int) -> torch.Tensor:
        if self.tokens is not None:
            return self.tokens[i].long()
        return tokenize(self.caption_slots(i), self.context_length)

    def uint8_view(self) -> PairDataset:
        """The same pairs with uint8 (3, H, W) images (shares every tensor with this dataset)."""
        view = copy.copy(self)
        view.normalized = False
        return view

    def _image(self, i: int) -> torch.Tensor:
        if self.normalized:
            return self.images[i]
        if isinstance(self.images, TensorImages):
            return self.images.images[i]
        if isinstance(self.images, LazyImages):
            return self.images.resolve(i)[1]
        raise TypeError(f"no uint8 images in {type(self.images).__name__}")

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self._image(i), self._tokens(i), i

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
        if isinstance(self.images, TensorImages) and self.tokens is not None:
            idx = np.asarray(indices, dtype=np.int64)  # numpy gathers: single-threaded, see `normalize`
            pixels = torch.from_numpy(self.images.images.numpy()[idx])
            images = (normalize(pixels) if self.normalized else pixels).unbind(0)
            tokens = torch.from_numpy(self.tokens.numpy()[idx].astype(np.int64)).unbind(0)
            return [(im, tok, int(i)) for im, tok, i in zip(images, tokens, indices, strict=True)]
        return [self[i] for i in indices]


def pretokenize(captions: Sequence[tuple[str, ...]], k: int, context_length: int, seed: int) -> torch.Tensor:
    """All caption slots of a set → int32 (N, K, ctx) (int32 halves the memory of int64 ids < 49408)."""
    flat = [c for i, caps in enumerate(captions) for c in sample_captions(caps, k, seed=seed, index=i)]
    return tokenize(flat, context_length).view(len(captions), k, context_length).to(torch.int32)


def build_pairs(records: Sequence[Record], data: ClipDataConfig, image_size: int, context_length: int,
                *, source: str, source_bad: BadData | None = None) -> PairDataset:
    """Records → `PairDataset` under the bad-data policy (see module doc).

    `source_bad`: what was already skipped in the whole source these records were split from; this split's
    own failures are added to it and the bad-data fraction is taken of the whole source, so a split is not
    refused for what is a small share of its source.
    """
    bad = source_bad.copy(source) if source_bad is not None else BadData(source, data.max_bad_fraction)
    total = bad.total or len(records)
    good = clean_records(records, bad)
    k = data.captions_per_image
    if len(good) > data.predecode_max:
        bad.check(total)
        images = LazyImages([r.image for r in good], image_size, bad)
        return PairDataset(images, captions=[r.captions for r in good], k=k, context_length=context_length,
                           seed=data.seed, name=source)
    pixels, errors = decode_all([r.image for r in good], image_size, workers=data.workers)
    for i in sorted(errors):
        bad.add(describe(good[i].image), errors[i])
    bad.check(total)
    if not good or len(errors) == len(good):
        raise UserError(f"{source}: no usable image–caption pairs")
    keep = [i for i in range(len(good)) if i not in errors]
    captions = [good[i].captions for i in keep]
    tokens = pretokenize(captions, k, context_length, data.seed)
    return PairDataset(TensorImages(pixels[keep]), tokens=tokens, captions=captions, k=k,
                       context_length=context_length, seed=data.seed, name=source)
