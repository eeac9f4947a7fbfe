"""`compt eval` on compt and plain open_clip checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compt.checkpoint import save_checkpoint
from compt.cli import main
from compt.clip.models import create_model, get_model_config

FAST = ["--eval-samples", "40", "--probe-samples", "0", "--batch-size", "16"]


@pytest.fixture
def checkpoints(tmp_path: Path) -> tuple[Path, Path]:
    cfg = get_model_config("test/A")
    model = create_model(cfg)
    compt_ckpt = save_checkpoint(tmp_path / "compt.pt", state_dict=model.state_dict(), model_config=cfg)
    plain = tmp_path / "plain.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, plain)
    return compt_ckpt, plain


def test_eval_compt_checkpoint_prints_table_and_writes_json(checkpoints, tmp_path: Path, capsys) -> None:
    out = tmp_path / "res" / "m.json"
    assert main(["eval", str(checkpoints[0]), "--data", "synthetic", "--json", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "zeroshot_top1" in printed and "retrieval/t2i_r10" in printed and "test/A" in printed
    payload = json.loads(out.read_text())
    assert payload["model"] == "test/A" and payload["data"]["eval_samples"] == 40
    assert 0 <= payload["metrics"]["zeroshot/shape/top1"] <= 100 and "retrieval_r1" in payload["metrics"]


def test_eval_plain_checkpoint_needs_model(checkpoints, capsys) -> None:
    assert main(["eval", str(checkpoints[1]), *FAST]) == 2
    assert "plain open_clip checkpoint without a model config; pass --model NAME" in capsys.readouterr().err
    assert main(["eval", str(checkpoints[1]), "--model", "test/A", *FAST]) == 0
    assert main(["eval", str(checkpoints[1]), "--model", "test/B", *FAST]) == 2  # wrong shape: clear error
    assert "weights do not fit model test/B" in capsys.readouterr().err
    assert main(["eval", str(checkpoints[0]), "--model", "test/B", *FAST]) == 2
    assert "holds a test/A model" in capsys.readouterr().err


def test_eval_csv_whole_file_and_bad_options(checkpoints, tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png\tpicture number {i}")
    (tmp_path / "val.tsv").write_text("filepath\tcaption\n" + "\n".join(rows) + "\n")
    args = ["eval", str(checkpoints[0]), "--data", "csv", "--data-path", str(tmp_path / "val.tsv"),
            "--set", "csv_separator=tab", "--json", str(tmp_path / "r.json"), *FAST]
    assert main(args) == 0
    metrics = json.loads((tmp_path / "r.json").read_text())["metrics"]
    assert set(metrics) == {f"retrieval/{d}_r{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)} | {"retrieval_r1"}
    assert metrics["retrieval/i2t_r10"] == 100.0  # 8 images: everything is in the top 10
    assert main(["eval", str(checkpoints[0]), "--data", "imagenet", *FAST]) == 2
    assert main(["eval", str(checkpoints[0]), "--data", "csv", *FAST]) == 2
    assert main(["eval", str(checkpoints[0]), "--set", "nonsense=1", *FAST]) == 2
    assert main(["eval", str(tmp_path / "missing.pt"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "unknown data kind 'imagenet'" in err and "needs --data-path" in err and "checkpoint not found" in err
