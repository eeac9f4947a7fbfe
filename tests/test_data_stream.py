"""Streaming webdataset shards (data.kind = "wds-stream"): passes, worker split, resampling, training."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import read_metrics, stage_kwargs
from PIL import Image
from torch.utils.data import DataLoader

from compt.clip.data import build_eval_suite, build_train_dataset
from compt.clip.data.stream import StreamingPairs
from compt.clip.models import get_model_config
from compt.clip.settings import ClipDataConfig
from compt.errors import UserError
from compt.train import train_stage


def write_shards(folder: Path, shards: int, per_shard: int, px: int = 20) -> str:
    """JPEG + txt samples; sample n's caption is "thing n" (so every sample is recognisable by its tokens)."""
    rng = np.random.default_rng(0)
    for s in range(shards):
        with tarfile.open(folder / f"{s:02d}.tar", "w") as tar:
            for i in range(per_shard):
                jpeg = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (px, px + 4, 3), dtype=np.uint8)).save(jpeg, "JPEG")
                for ext, payload in (("jpg", jpeg.getvalue()), ("txt", f"thing {s * per_shard + i}".encode())):
                    info = tarfile.TarInfo(f"s{s}_{i:03d}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    return str(folder / f"{{00..{shards - 1:02d}}}.tar")


def _stream(pattern: str, **kw) -> StreamingPairs:
    data = ClipDataConfig(kind="wds-stream", path=pattern, num_samples=24, **kw)
    stream = build_train_dataset(data, get_model_config("test/A"))
    assert isinstance(stream, StreamingPairs) and len(stream) == 24 and not stream.deterministic
    return stream


def test_each_pass_visits_every_sample_once_over_workers(tmp_path: Path) -> None:
    stream = _stream(write_shards(tmp_path, 4, 6))
    batches = iter(DataLoader(stream, batch_size=4, num_workers=2))
    first = [next(batches) for _ in range(6)]           # 2 workers × 2 shards × 6 samples = one pass
    images, tokens, index = first[0]
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 16, 16) and tokens.shape == (4, 1, 16)
    assert index.tolist() == [-1] * 4
    seen = {tuple(t[0].tolist()) for _, tok, _ in first for t in tok}
    assert len(seen) == 24
    second = {tuple(t[0].tolist()) for _, tok, _ in (next(batches) for _ in range(6)) for t in tok}
    assert second == seen                               # the next pass: the same samples, again once each


def test_resampled_stream_and_too_few_shards(tmp_path: Path) -> None:
    stream = _stream(write_shards(tmp_path, 2, 4), resampled=True, shuffle_buffer=8)
    assert stream.resampled and stream.shuffle_buffer == 8
    assert sum(len(b[0]) for _, b in zip(range(5), DataLoader(stream, batch_size=4))) == 20  # endless
    few = _stream(str(tmp_path / "00.tar"))
    with pytest.raises(UserError, match="got no samples"):
        list(zip(range(4), DataLoader(few, batch_size=2, num_workers=2)))


def test_stage_trains_on_a_stream_and_evaluation_needs_eval_path(tmp_path: Path) -> None:
    pattern = write_shards(tmp_path, 2, 12)
    stream = _stream(pattern)
    result = train_stage(**stage_kwargs(tmp_path / "run", dataset=stream, epochs=2, batch_size=8))
    losses = [r["loss"] for r in read_metrics(tmp_path / "run")]
    assert result.steps == 6 and len(losses) == 6 and all(np.isfinite(losses))
    data = ClipDataConfig(kind="wds-stream", path=pattern, num_samples=24)
    with pytest.raises(UserError, match="eval_path"):
        build_eval_suite(data, get_model_config("test/A"))
    suite = build_eval_suite(ClipDataConfig(kind="wds-stream", path=pattern, eval_path=pattern, eval_samples=8),
                             get_model_config("test/A"))
    assert len(suite.retrieval.images) == 8


def test_stream_settings_are_validated() -> None:
    from compt.config import validate_data

    validate_data(ClipDataConfig(kind="wds-stream", path="s/{0..1}.tar", shuffle_buffer=1, resampled=True))
    with pytest.raises(UserError, match="data.shuffle_buffer must be at least 1"):
        validate_data(ClipDataConfig(kind="wds-stream", path="s/{0..1}.tar", shuffle_buffer=0))
