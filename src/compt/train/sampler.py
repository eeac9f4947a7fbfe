"""Data order: one resumable stream of epoch permutations, cut into global batches and rank shards.

Epoch e visits the dataset in the order ``randperm(N, generator=Generator().manual_seed(seed + e))``; the
epochs are concatenated into one stream and optimizer step s takes stream samples [s·B, (s+1)·B) — every
batch is full, fractional epochs need no special case, and the order from any step on is a pure function
of (seed, step), so a resumed stage reads exactly the batches an uninterrupted one would. A global batch
is split into `accum` micro-batches and each micro-batch into `num_shards` equal, disjoint shards (one per rank).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


@functools.lru_cache(maxsize=2)
def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """Visiting order of epoch `epoch` (cached: consecutive steps read the same permutation)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))


def global_batch(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Dataset indices of optimizer step `step` (0-based): stream samples [step·B, (step+1)·B)."""
    out, start = [], step * batch_size
    while batch_size > 0:
        epoch, offset = divmod(start, n)
        take = epoch_permutation(n, seed, epoch)[offset:offset + batch_size]
        out.append(take)
        start, batch_size = start + len(take), batch_size - len(take)
    return torch.cat(out)


class StepBatchSampler(Sampler[list[int]]):
    """Yields shard `shard_id`'s index lists, micro-batch after micro-batch, for steps [start, stop)."""

    def __init__(self, n: int, *, batch_size: int, accum: int, seed: int, start: int, stop: int,
                 shard_id: int = 0, num_shards: int = 1) -> None:
        if batch_size % (accum * num_shards):
            raise ValueError(f"batch size {batch_size} is not divisible by accum_steps × processes "
                             f"({accum} × {num_shards})")
        self.n, self.batch_size, self.accum, self.seed = n, batch_size, accum, seed
        self.start, self.stop, self.shard_id, self.num_shards = start, stop, shard_id, num_shards

    def __len__(self) -> int:
        return (self.stop - self.start) * self.accum

    @property
    def shard_size(self) -> int:
        """Samples per yielded index list: one rank's share of one micro-batch."""
        return self.batch_size // self.accum // self.num_shards

    def __iter__(self) -> Iterator[list[int]]:
        micro = self.batch_size // self.accum
        shard = micro // self.num_shards
        for step in range(self.start, self.stop):
            batch = global_batch(self.n, self.batch_size, self.seed, step)
            for j in range(self.accum):
                lo = j * micro + self.shard_id * shard
                yield batch[lo:lo + shard].tolist()
