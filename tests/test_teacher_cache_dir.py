"""`train.teacher_cache_dir`: a stage's teacher-cache files on that (node-local) disk, reused by a resume,
deleted once the stage's result is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import final_weights, read_metrics, stage_kwargs

from compt.clip import teacher_cache
from compt.config import TrainConfig, validate_train
from compt.errors import UserError
from compt.stage import teacher_cache_folder
from compt.train import train_stage

# a file cache (mem_gb 0) for test/B → test/C, one checkpoint per step; 64 samples, batch 16, 2 epochs = 8 steps
KW = {"model": "test/C", "teacher": "test/B", "distill": "fd", "epochs": 2, "teacher_cache": True,
      "teacher_cache_mem_gb": 0.0, "ckpt_every_steps": 1}


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _counting_fills(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Teacher forwards of cache fills (one entry per batch encoded)."""
    calls: list[int] = []
    encode = teacher_cache._encode_padded

    def counted(*args, **kwargs):
        calls.append(1)
        return encode(*args, **kwargs)

    monkeypatch.setattr(teacher_cache, "_encode_padded", counted)
    return calls


def test_cache_lands_in_the_configured_dir_and_is_gone_when_the_stage_finishes(tmp_path: Path) -> None:
    kw = stage_kwargs(tmp_path / "stage", teacher_cache_dir=str(tmp_path / "local"), **KW)
    folder = teacher_cache_folder(kw["spec"].train, tmp_path / "stage")
    assert folder.parent == tmp_path / "local" and folder.name.startswith("stage-")
    seen: list[list[str]] = []
    train_stage(**kw, on_step=lambda step: seen.append(_listing(folder)))
    assert seen[0] == ["node0.done.json", "node0.image.bf16", "node0.text.bf16"]  # there while training
    assert not folder.exists() and not (tmp_path / "stage" / "teacher_cache").exists()
    assert (tmp_path / "stage" / "result.json").is_file()


def test_default_folder_is_under_the_stage_and_is_deleted_too(tmp_path: Path) -> None:
    kw = stage_kwargs(tmp_path / "stage", **KW)
    seen: list[list[str]] = []
    train_stage(**kw, on_step=lambda step: seen.append(_listing(tmp_path / "stage" / "teacher_cache")))
    assert seen[0] == ["node0.done.json", "node0.image.bf16", "node0.text.bf16"]
    assert not (tmp_path / "stage" / "teacher_cache").exists()


@pytest.mark.parametrize("complete", [True, False])
def test_resumed_stage_reuses_a_complete_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               complete: bool) -> None:
    """Crash after step 3, resume: the cache is mapped again (no teacher forward) and the run ends bit-exactly
    as an uninterrupted one; without the completion record the resume fills it afresh."""
    local = str(tmp_path / "local")
    train_stage(**stage_kwargs(tmp_path / "whole", teacher_cache_dir=local, **KW))

    def crash(step: int) -> None:
        if step == 3:
            raise RuntimeError("simulated crash")

    kw = stage_kwargs(tmp_path / "resumed", teacher_cache_dir=local, **KW)
    folder = teacher_cache_folder(kw["spec"].train, tmp_path / "resumed")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_stage(**kw, on_step=crash)
    assert _listing(folder) == ["node0.done.json", "node0.image.bf16", "node0.text.bf16"]  # kept: unfinished
    if not complete:
        (folder / "node0.done.json").unlink()
    fills = _counting_fills(monkeypatch)
    train_stage(**stage_kwargs(tmp_path / "resumed", teacher_cache_dir=local, **KW))
    assert len(fills) == (0 if complete else 4)  # 64 samples in batches of 16
    assert read_metrics(tmp_path / "whole") == read_metrics(tmp_path / "resumed")
    a, b = final_weights(tmp_path / "whole"), final_weights(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not folder.exists()


def test_a_fresh_stage_never_reuses_files_left_in_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No last.pt (not a resume): whatever a cache folder holds is refilled, never trusted."""
    kw = stage_kwargs(tmp_path / "stage", **KW)
    folder = teacher_cache_folder(kw["spec"].train, tmp_path / "stage")
    folder.mkdir(parents=True)
    for name in ("node0.image.bf16", "node0.text.bf16", "node0.done.json"):
        (folder / name).write_bytes(b"stale")
    fills = _counting_fills(monkeypatch)
    train_stage(**kw)
    assert len(fills) == 4


def test_teacher_cache_dir_must_be_absolute() -> None:
    validate_train(TrainConfig(teacher_cache_dir="/scratch/compt"))
    with pytest.raises(UserError, match="train.teacher_cache_dir must be an absolute path"):
        validate_train(TrainConfig(teacher_cache_dir="scratch/compt"))
