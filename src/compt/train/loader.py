"""The training DataLoader: worker processes sized from the CPUs per rank, pinned, prefetching, uint8 images.

Images travel as uint8 (a quarter of float32's bytes) from the workers through pinned memory to the device,
where `compt.clip.data.images.to_model_input` normalises them; with a teacher cache, the batch's teacher rows
come along (`WithTeacherRows`), gathered by the workers. ``TrainConfig.loader_workers = -1`` (the default)
means one worker per CPU this rank owns, less one for the training process, at most `MAX_AUTO_WORKERS`.
"""

from __future__ import annotations

import os
import signal
import traceback
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from torch.utils.data import DataLoader, Dataset, IterableDataset

from compt import distributed
from compt.distributed import DistInfo
from compt.train.sampler import StepBatchSampler

MAX_AUTO_WORKERS = 8
PREFETCH_FACTOR = 4  # batches in flight per worker


def ignore_stop_signals(_worker_id: int = 0) -> None:
    """A loader worker's `worker_init_fn`: SIGTERM and SIGINT are the main process's to decide. A scheduler
    (Slurm, ``timeout``, ``docker stop``, systemd) signals the whole process group; the main process then
    checkpoints after its step and stops, and the workers are shut down with the loader."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Batches:
    """``next(batches)`` over a DataLoader inside a ``with`` block whose end shuts the loader's worker processes
    down, also when the block raises. Otherwise a failed stage keeps torch's iterator alive in the exception's
    traceback (a reference cycle that only the garbage collector frees; its frames are cleared here), and the
    interpreter's exit — which stops worker processes with SIGTERM and then joins them, before any collection —
    waits forever for workers that ignore SIGTERM (`ignore_stop_signals`)."""

    def __init__(self, loader: DataLoader) -> None:
        self._batches: Iterator[Any] | None = iter(loader)

    def __enter__(self) -> Batches:
        return self

    def __exit__(self, _kind: object, _error: object, tb: TracebackType | None) -> None:
        if tb is not None:   # a batch that failed (e.g. in a worker): the frames of torch's iterator hold it too
            traceback.clear_frames(tb)
        self._batches = None   # the iterator's last reference: torch shuts its workers down as it goes

    def __iter__(self) -> Batches:
        return self

    def __next__(self) -> Any:
        if self._batches is None:
            raise StopIteration
        return next(self._batches)


def as_read(batch: Any) -> Any:
    """The collate function of a dataset that `reads_batches`: its batch is already tensors."""
    return batch


def cpus_per_rank() -> int:
    """CPUs this process may use, shared evenly by the ranks of its node."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cpus // distributed.local_world_size())


def resolve_workers(requested: int) -> int:
    """`requested` when ≥ 0; -1 (auto): CPUs per rank − 1, at most `MAX_AUTO_WORKERS`."""
    return requested if requested >= 0 else max(0, min(MAX_AUTO_WORKERS, cpus_per_rank() - 1))


def training_view(dataset: Dataset, cache: Any | None) -> Dataset:
    """What the training loader reads: uint8 images where the dataset offers them, with a task's teacher cache
    (`compt.clip.teacher_cache.TeacherCache`) its rows appended."""
    view = dataset.uint8_view() if hasattr(dataset, "uint8_view") else dataset
    return cache.attach(view) if cache is not None else view


def train_loader(dataset: Dataset, batch_sampler: StepBatchSampler, *, workers: int, info: DistInfo,
                 cache: Any | None = None) -> DataLoader:
    """DataLoader over `training_view(dataset, cache)` with `resolve_workers(workers)` persistent workers.

    A map-style dataset is read in `batch_sampler`'s order (one ``dataset[index list]`` per batch when it
    `reads_batches`, e.g. `compt.lm.shards.SegmentWindows`); a stream (`IterableDataset`, e.g.
    `compt.clip.data.stream.StreamingPairs`) is cut by each worker into batches of the sampler's shard size.
    """
    n = resolve_workers(workers)
    extra = {"persistent_workers": True, "prefetch_factor": PREFETCH_FACTOR,
             "worker_init_fn": ignore_stop_signals} if n > 0 else {}
    if isinstance(dataset, IterableDataset):
        return DataLoader(dataset, batch_size=batch_sampler.shard_size, num_workers=n, pin_memory=info.pin_memory,
                          **extra)
    if getattr(dataset, "reads_batches", False) and cache is None:   # dataset[index list] is the batch
        return DataLoader(dataset, sampler=batch_sampler, batch_size=None, collate_fn=as_read, num_workers=n,
                          pin_memory=info.pin_memory, **extra)
    return DataLoader(training_view(dataset, cache), batch_sampler=batch_sampler, num_workers=n,
                      pin_memory=info.pin_memory, **extra)
