"""The training loader: uint8 images normalised on the device, worker count, teacher rows with the batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import read_metrics, stage_kwargs
from torch.utils.data import IterableDataset

from compt.clip.data.datasets import PairDataset
from compt.clip.data.images import TensorImages, to_model_input
from compt.clip.teacher_cache import TeacherCache
from compt.distributed import DistInfo
from compt.train import train_stage
from compt.train.loader import MAX_AUTO_WORKERS, PREFETCH_FACTOR, ignore_stop_signals, resolve_workers, train_loader
from compt.train.sampler import StepBatchSampler


def _pairs(n: int = 12) -> PairDataset:
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
    tokens = torch.randint(1, 400, (n, 2, 6), generator=g).to(torch.int32)
    return PairDataset(TensorImages(pixels), tokens=tokens, k=2, context_length=6)


def test_uint8_items_normalised_later_equal_the_float_items() -> None:
    data, idx = _pairs(), [3, 0, 7]
    floats, raw = data.__getitems__(idx), data.uint8_view().__getitems__(idx)
    assert raw[0][0].dtype == torch.uint8 and data.uint8_view()[5][0].dtype == torch.uint8
    assert torch.equal(to_model_input(torch.stack([r[0] for r in raw])), torch.stack([f[0] for f in floats]))
    assert all(torch.equal(r[1], f[1]) and r[2] == f[2] for r, f in zip(raw, floats, strict=True))
    assert data.normalized and data[5][0].dtype == torch.float32  # the view shares, does not change, the set


@pytest.mark.parametrize("cpus, local, expect", [(2, 1, 1), (16, 8, 1), (64, 4, MAX_AUTO_WORKERS), (1, 1, 0)])
def test_auto_workers_from_cpus_per_rank(monkeypatch, cpus: int, local: int, expect: int) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: set(range(cpus)))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local))
    assert resolve_workers(-1) == expect and resolve_workers(3) == 3


def test_loader_delivers_uint8_images_and_teacher_rows() -> None:
    data = _pairs()
    cache = TeacherCache(image=torch.randn(12, 4).bfloat16(), text=torch.randn(12, 2, 4).bfloat16(),
                         logit_scale=torch.tensor(10.0))
    sampler = StepBatchSampler(12, batch_size=4, accum=1, seed=0, start=0, stop=2)
    batches = list(train_loader(data, sampler, workers=1, info=DistInfo(), cache=cache))
    assert len(batches) == 2
    images, tokens, index, t_image, t_text = batches[0]
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 8, 8) and tokens.shape == (4, 2, 6)
    assert torch.equal(t_image, cache.image[index]) and torch.equal(t_text, cache.text[index])


def test_worker_processes_change_nothing(tmp_path: Path) -> None:
    kw = {"model": "test/C", "teacher": "test/B", "distill": "fd", "epochs": 0.5}
    train_stage(**stage_kwargs(tmp_path / "w0", loader_workers=0, **kw))
    train_stage(**stage_kwargs(tmp_path / "w2", loader_workers=2, **kw))
    assert read_metrics(tmp_path / "w0") == read_metrics(tmp_path / "w2")


class _Stream(IterableDataset):
    def __iter__(self):
        return iter([])


@pytest.mark.parametrize("device, pinned", [("cpu", False), ("cuda", True)])
@pytest.mark.parametrize("dataset", [_pairs, _Stream], ids=["indexed", "stream"])
def test_loader_settings_pinned_only_for_cuda_persistent_and_prefetching(dataset, device: str, pinned: bool) -> None:
    """docs/cluster.md: workers are persistent, pinned (on CUDA: pinning serves only the host → GPU copy) and
    prefetch PREFETCH_FACTOR batches each; without workers none of that applies. Built only, not iterated."""
    sampler = StepBatchSampler(12, batch_size=4, accum=1, seed=0, start=0, stop=2)
    info = DistInfo(device=torch.device(device))
    loader = train_loader(dataset(), sampler, workers=2, info=info)
    assert loader.num_workers == 2 and loader.pin_memory is pinned and loader.persistent_workers
    assert loader.prefetch_factor == PREFETCH_FACTOR == 4 and loader.worker_init_fn is ignore_stop_signals
    inline = train_loader(dataset(), sampler, workers=0, info=info)
    assert inline.num_workers == 0 and inline.pin_memory is pinned and not inline.persistent_workers
    assert inline.prefetch_factor is None and inline.worker_init_fn is None


def test_the_trainer_trains_from_the_loader_it_builds(tmp_path: Path, monkeypatch) -> None:
    """The loader `train_stage` actually iterates is train_loader's, with the configured workers (auto on
    CPU: not pinned)."""
    import compt.train.trainer as trainer

    built = []
    monkeypatch.setattr(trainer, "train_loader", lambda *a, **kw: built.append(train_loader(*a, **kw)) or built[-1])
    train_stage(**stage_kwargs(tmp_path / "s", loader_workers=1, epochs=0.5))
    (loader,) = built
    assert loader.num_workers == 1 and loader.persistent_workers and loader.prefetch_factor == PREFETCH_FACTOR
    assert not loader.pin_memory
