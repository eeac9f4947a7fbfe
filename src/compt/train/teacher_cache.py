"""Teacher-feature cache: the frozen teacher's embeddings of every sample, computed once per stage.

When the dataset's items are deterministic (same pixels and tokens for an index in every epoch), the
teacher's normalised image (N, E) and text (N, K, E) embeddings do not change during a stage. One fill
pass computes them (each rank a slice of the indices, then all-gathered) and every later step looks its
batch up by index instead of running the teacher: a distillation step then costs what a plain step costs.
Small caches live in memory; above `TrainConfig.teacher_cache_mem_gb` they are memory-mapped files under
the stage folder (one per rank). A resumed stage recomputes the cache (same values: deterministic).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from compt import distributed
from compt.distributed import DistInfo
from compt.tasks import encode


@dataclass
class TeacherCache:
    """Normalised teacher embeddings by dataset index: image (N, E), text (N, K, E), logit scale ()."""

    image: Tensor
    text: Tensor
    logit_scale: Tensor

    def lookup(self, index: Tensor, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        idx = index.cpu()
        return (self.image[idx].to(device, non_blocking=True), self.text[idx].to(device, non_blocking=True),
                self.logit_scale.to(device))


def _storage(shape: tuple[int, ...], path: Path | None) -> Tensor:
    """A zeroed fp32 tensor in memory, or memory-mapped on `path` when given."""
    if path is None:
        return torch.zeros(shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    return torch.from_file(str(path), shared=True, size=math.prod(shape), dtype=torch.float32).view(shape)


def cache_bytes(num_samples: int, captions: int, embed_dim: int) -> int:
    return 4 * num_samples * (1 + captions) * embed_dim


@torch.no_grad()
def fill_teacher_cache(teacher: nn.Module, dataset: Dataset, *, captions: int, embed_dim: int, batch_size: int,
                       info: DistInfo, precision: str = "auto", workers: int = 0,
                       mmap_dir: Path | None = None) -> TeacherCache:
    """Run the teacher once over the whole dataset and keep its embeddings.

    Rank r encodes indices [r·C, (r+1)·C) with C = ⌈N / W⌉ in batches; after every batch the ranks
    all-gather their (padded) rows and each writes all of them into its full table.
    """
    n = len(dataset)
    chunk = math.ceil(n / info.world_size)
    start = min(info.rank * chunk, n)
    loader = iter(DataLoader(Subset(dataset, range(start, min(start + chunk, n))), batch_size=batch_size,
                             num_workers=workers))
    name = (lambda s: mmap_dir / f"rank{info.rank}.{s}.f32") if mmap_dir is not None else (lambda s: None)
    image, text = _storage((n, embed_dim), name("image")), _storage((n, captions, embed_dim), name("text"))
    teacher.eval()
    for first in range(0, chunk, batch_size):
        rows = min(batch_size, chunk - first)
        img, txt = _encode_padded(teacher, next(loader, None), rows, captions, embed_dim, info, precision)
        img, txt = distributed.gather_no_grad(img).cpu(), distributed.gather_no_grad(txt).cpu()
        for r in range(info.world_size):  # rank r's rows sit at r·rows … in the gathered batch
            lo, hi = r * chunk + first, min(r * chunk + first + rows, n)
            if hi > lo:
                image[lo:hi], text[lo:hi] = img[r * rows:r * rows + hi - lo], txt[r * rows:r * rows + hi - lo]
    scale = teacher.logit_scale.detach().exp().float().cpu()
    return TeacherCache(image=image, text=text, logit_scale=scale)


def _encode_padded(teacher: nn.Module, batch: list[Tensor] | None, rows: int, captions: int, embed_dim: int,
                   info: DistInfo, precision: str) -> tuple[Tensor, Tensor]:
    """Teacher features of `batch` zero-padded to `rows` rows (all zeros when this rank has no batch left)."""
    img = torch.zeros(rows, embed_dim, device=info.device)
    txt = torch.zeros(rows, captions, embed_dim, device=info.device)
    if batch is not None:
        images, tokens, _ = distributed.move(batch, info)
        with distributed.autocast(info, precision):
            i, t, _ = encode(teacher, images, tokens)
        img[:len(i)], txt[:len(i)] = i, t
    return img, txt
