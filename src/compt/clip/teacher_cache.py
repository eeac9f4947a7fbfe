"""Teacher-feature cache: the frozen teacher's embeddings of every sample, computed once per stage.

When the dataset's items are deterministic (same pixels and tokens for an index in every epoch), the
teacher's normalised image (N, E) and text (N, K, E) embeddings do not change during a stage. One fill
pass computes them (each rank a slice of the indices, then all-gathered) and every later step receives its
batch's rows from the DataLoader (`WithTeacherRows`), gathered on the host by the loader workers and copied
with the batch: no teacher forward, no host sync in the step.

Rows are stored in bf16 (normalised embeddings: |x| ≤ 1, relative error ≤ 2⁻⁹), half of fp32. There is one
copy per node: in memory when it is small (`TrainConfig.teacher_cache_mem_gb`) and this node runs a single
rank, otherwise memory-mapped files ``node<i>.{image,text}.bf16`` in `compt.stage.teacher_cache_folder`
(under the stage folder, or on the node-local disk ``train.teacher_cache_dir``) that the node's local rank 0
writes and every local rank (and its loader workers, forked) maps read-only; the pages live once in the node's
page cache. A complete fill leaves ``node<i>.done.json`` (the shapes) beside them: a resumed stage maps those
files again when every node has them, and fills afresh otherwise. The trainer deletes the folder once the
stage's result is written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from compt import distributed
from compt.clip.data.images import to_model_input
from compt.clip.tasks import encode
from compt.distributed import DistInfo
from compt.train.loader import Batches, ignore_stop_signals

DTYPE = torch.bfloat16


@dataclass
class TeacherCache:
    """Normalised teacher embeddings by dataset index: image (N, E), text (N, K, E) in bf16; logit scale ()."""

    image: Tensor
    text: Tensor
    logit_scale: Tensor

    def rows(self, index: Tensor | Sequence[int]) -> tuple[Tensor, Tensor]:
        """Host gather of rows `index`: image (B, E), text (B, K, E), bf16."""
        idx = torch.as_tensor(index, dtype=torch.long)
        return self.image[idx], self.text[idx]

    def attach(self, dataset: Dataset) -> Dataset:
        """`dataset` whose items carry their cached teacher rows (what the training loader reads)."""
        return WithTeacherRows(dataset, self)


class WithTeacherRows(Dataset):
    """Items of `dataset` followed by their cached teacher rows: (image, tokens, i, t_image (E,), t_text (K, E))."""

    def __init__(self, dataset: Dataset, cache: TeacherCache) -> None:
        self.dataset, self.cache = dataset, cache

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple:
        return (*self.dataset[i], self.cache.image[i], self.cache.text[i])

    def __getitems__(self, indices: Sequence[int]) -> list[tuple]:
        many = getattr(self.dataset, "__getitems__", None)
        items = many(indices) if many is not None else [self.dataset[i] for i in indices]
        image, text = self.cache.rows(indices)
        return [(*item, a, b) for item, a, b in zip(items, image, text, strict=True)]


def cache_bytes(num_samples: int, captions: int, embed_dim: int) -> int:
    """Bytes of one copy: N × (1 + K) × E bf16 values."""
    return DTYPE.itemsize * num_samples * (1 + captions) * embed_dim


def _storage(shape: tuple[int, ...], path: Path | None, create: bool) -> Tensor:
    """A zeroed bf16 tensor in memory, or one mapped on `path` (created and zeroed when `create`)."""
    if path is None:
        return torch.zeros(shape, dtype=DTYPE)
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
    return torch.from_file(str(path), shared=True, size=math.prod(shape), dtype=DTYPE).view(shape)


@torch.no_grad()
def fill_teacher_cache(teacher: nn.Module, dataset: Dataset, *, captions: int, embed_dim: int, batch_size: int,
                       info: DistInfo, precision: str = "auto", workers: int = 0,
                       mmap_dir: Path | None = None, reuse: bool = False) -> TeacherCache:
    """Run the teacher once over the whole dataset and keep its embeddings (one copy per node).

    Rank r encodes indices [r·C, (r+1)·C) with C = ⌈N / W⌉ in batches; after every batch the ranks
    all-gather their (padded) rows and the node's writer (local rank 0) stores all of them. With `mmap_dir`
    the other local ranks then map the writer's file; without it every rank keeps its own (single-rank
    nodes only: the trainer passes a folder whenever a node runs several ranks). `reuse` (a resumed stage):
    map the files of an earlier complete fill in `mmap_dir` instead, when every node has them.
    """
    n = len(dataset)  # type: ignore[arg-type]
    shapes = {"image": (n, embed_dim), "text": (n, captions, embed_dim)}
    node = f"node{distributed.node_index()}"
    name = (lambda s: mmap_dir / f"{node}.{s}.bf16") if mmap_dir else (lambda s: None)
    done = mmap_dir / f"{node}.done.json" if mmap_dir else None
    scale = teacher.logit_scale.detach().exp().float().cpu()
    if done is not None and distributed.all_true(reuse and _complete(done, shapes)):
        store = {k: _storage(v, name(k), create=False) for k, v in shapes.items()}
        return TeacherCache(image=store["image"], text=store["text"], logit_scale=scale)
    chunk = math.ceil(n / info.world_size)
    start = min(info.rank * chunk, n)
    writer = mmap_dir is None or info.local_rank == 0
    if done is not None and writer:
        done.unlink(missing_ok=True)  # an interrupted refill must not look complete
    store = {k: _storage(v, name(k), create=True) for k, v in shapes.items()} if writer else {}
    teacher.eval()
    with Batches(DataLoader(Subset(dataset, range(start, min(start + chunk, n))), batch_size=batch_size,
                            num_workers=workers, worker_init_fn=ignore_stop_signals if workers else None)) as loader:
        for first in range(0, chunk, batch_size):
            rows = min(batch_size, chunk - first)
            img, txt = _encode_padded(teacher, next(loader, None), rows, captions, embed_dim, info, precision)
            img, txt = distributed.gather_no_grad(img).cpu(), distributed.gather_no_grad(txt).cpu()
            for r in range(info.world_size if writer else 0):  # rank r's rows sit at r·rows … of the gathered batch
                lo, hi = r * chunk + first, min(r * chunk + first + rows, n)
                if hi > lo:
                    store["image"][lo:hi] = img[r * rows:r * rows + hi - lo]
                    store["text"][lo:hi] = txt[r * rows:r * rows + hi - lo]
    if done is not None and writer:
        done.write_text(json.dumps(shapes))
    distributed.barrier()  # the writer's file is complete before the other local ranks map it
    if not writer:
        store = {k: _storage(v, name(k), create=False) for k, v in shapes.items()}
    return TeacherCache(image=store["image"], text=store["text"], logit_scale=scale)


def _complete(done: Path, shapes: dict[str, tuple[int, ...]]) -> bool:
    """Whether `done` records a complete fill of these shapes, its data files beside it at their full size."""
    try:
        recorded = json.loads(done.read_text())
        sizes = {k: done.with_name(done.name.replace("done.json", f"{k}.bf16")).stat().st_size for k in shapes}
    except (OSError, ValueError):
        return False
    full = {k: math.prod(v) * DTYPE.itemsize for k, v in shapes.items()}
    return recorded == {k: list(v) for k, v in shapes.items()} and sizes == full


def _encode_padded(teacher: nn.Module, batch: list[Tensor] | None, rows: int, captions: int, embed_dim: int,
                   info: DistInfo, precision: str) -> tuple[Tensor, Tensor]:
    """Teacher features of `batch` zero-padded to `rows` rows (all zeros when this rank has no batch left)."""
    img = torch.zeros(rows, embed_dim, device=info.device)  # fp32 through the all-gather (gloo and NCCL)
    txt = torch.zeros(rows, captions, embed_dim, device=info.device)
    if batch is not None:
        images, tokens, _ = distributed.move(batch[:3], info)
        with distributed.autocast(info, precision):
            i, t, _ = encode(teacher, to_model_input(images), tokens)
        img[:len(i)], txt[:len(i)] = i, t
    return img, txt
