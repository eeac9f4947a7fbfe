"""Streaming webdataset shards with the `webdataset` library (``data.kind = "wds-stream"``), for CC3M scale.

The indexed reader (``kind = "wds"``, `compt.clip.data.files.read_shards`) scans every shard up front and reads
samples by random access: the order is a pure function of (seed, step), so a stage resumes bit-exactly and
the teacher's outputs can be cached by index. This stream instead reads shards sequentially, as open_clip's
trainer does:

    shard list ─(seeded shuffle per epoch, or resampled with replacement)─ split by node ─ split by worker
      ─ tar → samples ─ shuffle buffer ─ decode RGB ─ (uint8 image (3, H, W), tokens (K, ctx), -1)

It is an endless iterable: pass e (e = 0, 1, …) visits every shard once (each rank a disjoint share, each
loader worker a share of that) in the order of ``Random(seed + e)``; with ``data.resampled`` shards are drawn
with replacement instead. An "epoch" is ``data.num_samples`` samples (`__len__`), which is what the trainer
counts steps and epochs in. When the run carves a validation split out of the shards, the stream skips the
samples whose key ranks below the split's bound (`compt.clip.data.carve`), right after reading them. The
stream is not indexable: there is no exact resume (a resumed stage restarts the stream) and no teacher cache
(``deterministic = False``: the teacher runs every step).
"""

from __future__ import annotations

import itertools
import random
import zlib
from collections.abc import Iterator

import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from compt.clip.data.carve import key_rank, stream_bound
from compt.clip.data.files import expand_braces
from compt.clip.data.images import resize_center_crop, to_rgb
from compt.clip.data.text import sample_captions, tokenize
from compt.clip.settings import ClipDataConfig
from compt.errors import UserError

SHUFFLE_BUFFER = 2_000      # samples (data.shuffle_buffer = None)
IMAGE_KEYS = "jpg;jpeg;png;webp"


class StreamingPairs(IterableDataset):
    """Endless stream of (uint8 image (3, H, W), tokens long (K, ctx), -1) from webdataset shards."""

    deterministic = False   # no index: the teacher cannot be cached
    normalized = False      # images stay uint8: the trainer normalises them on its device

    def __init__(self, urls: list[str], *, num_samples: int, image_size: int, context_length: int, k: int,
                 seed: int, caption_separator: str = "", shuffle_buffer: int = SHUFFLE_BUFFER,
                 resampled: bool = False, skip_below: int = 0) -> None:
        self.urls, self.num_samples = urls, num_samples
        self.skip_below = skip_below   # samples of key rank below this are the validation split's (0: none)
        self.image_size, self.context_length = image_size, context_length
        self.k, self.seed, self.separator = k, seed, caption_separator
        self.shuffle_buffer, self.resampled = shuffle_buffer, resampled
        tokenize([""], context_length)  # build the tokenizer here, once: forked loader workers inherit it

    def __len__(self) -> int:
        return self.num_samples

    def _stream_seed(self, epoch: int) -> int:
        """Shuffle-buffer seed of this rank's loader worker in pass `epoch` (distinct per worker and rank)."""
        worker = get_worker_info()
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        return ((self.seed * 1_000_003 + epoch) * 65_537 + rank) * 1_031 + (worker.id if worker is not None else 0)

    def _pipeline(self, epoch: int) -> wds.DataPipeline:
        if self.resampled:
            shards = [wds.ResampledShards(self.urls, seed=self.seed + epoch, deterministic=True)]
        else:
            order = list(self.urls)
            random.Random(self.seed + epoch).shuffle(order)
            shards = [wds.SimpleShardList(order), wds.split_by_node, wds.split_by_worker]
        carved = [wds.select(self._trains)] if self.skip_below else []
        return wds.DataPipeline(
            *shards, wds.tarfile_to_samples(handler=wds.warn_and_continue), *carved,
            wds.shuffle(self.shuffle_buffer, initial=min(self.shuffle_buffer, 100), seed=self._stream_seed(epoch)),
            wds.decode("pil", handler=wds.warn_and_continue), wds.to_tuple("__key__", IMAGE_KEYS, "txt"),
            wds.map(self._item, handler=wds.warn_and_continue))

    def _trains(self, sample: dict) -> bool:
        """Whether a raw sample is a training sample (not in the carved validation split)."""
        return key_rank(sample["__key__"], self.seed) >= self.skip_below

    def _item(self, sample: tuple) -> tuple[torch.Tensor, torch.Tensor, int]:
        key, image, text = sample
        lines = [ln for ln in str(text).splitlines() if ln.strip()] or [str(text)]
        captions = [c for ln in lines for c in (ln.split(self.separator) if self.separator else [ln])]
        slots = sample_captions(tuple(captions), self.k, seed=self.seed, index=zlib.crc32(key.encode()))
        return resize_center_crop(to_rgb(image), self.image_size), tokenize(slots, self.context_length), -1

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        for epoch in itertools.count():
            empty = True
            for item in self._pipeline(epoch):
                empty = False
                yield item
            if empty:
                raise UserError(f"a loader worker got no samples from {len(self.urls)} shard(s): give every rank "
                                f"and worker at least one shard, or set data.resampled = true")


def streaming_pairs(data: ClipDataConfig, image_size: int, context_length: int, carve: bool = False) -> StreamingPairs:
    """The ``wds-stream`` training set of `data` (``data.path`` a brace pattern of local or URL shards); with
    `carve`, without the samples of the validation split carved from them (`compt.clip.data.carve.stream_bound`)."""
    if not data.path:
        raise UserError('data.kind = "wds-stream" needs data.path (a shard pattern "shards/{000..099}.tar")')
    return StreamingPairs(expand_braces(data.path), num_samples=data.num_samples, image_size=image_size,
                          context_length=context_length, k=data.captions_per_image, seed=data.seed,
                          caption_separator=data.caption_separator,
                          shuffle_buffer=data.shuffle_buffer if data.shuffle_buffer is not None else SHUFFLE_BUFFER,
                          resampled=bool(data.resampled), skip_below=stream_bound(data) if carve else 0)
