"""Distance from the parent (`compt.diagnostics`): linear CKA and the relative update, by hand and on a chain."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compt.chain import train_run
from compt.config import config_from_dict
from compt.diagnostics import linear_cka, relative_update
from compt.report import write_report


def test_linear_cka_by_hand() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=g)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3.0 * x @ q + 1.0) == pytest.approx(1.0)            # rotation, scale, shift
    assert linear_cka(x, torch.cat([x, torch.zeros(200, 4)], 1)) == pytest.approx(1.0)  # wider, padded
    assert linear_cka(x, torch.randn(200, 8, generator=g)) < 0.2
    a, b = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), torch.tensor([[1.0], [2.0], [4.0]])
    ac, bc = a - a.mean(0), b - b.mean(0)                                     # the formula, by hand
    want = (bc.T @ ac).norm() ** 2 / ((ac.T @ ac).norm() * (bc.T @ bc).norm())
    assert linear_cka(a, b) == pytest.approx(float(want))
    with pytest.raises(ValueError, match="same inputs"):
        linear_cka(x, x[:10])


def test_relative_update_by_hand() -> None:
    start = {"w": torch.tensor([3.0, 4.0]), "step": torch.tensor(7)}
    end = {"w": torch.tensor([3.0, 1.0]), "step": torch.tensor(9)}
    assert relative_update(start, end) == pytest.approx(3.0 / 5.0)


RAW = {"name": "diag", "data": {"num_samples": 64, "eval_samples": 32, "probe_samples": 0},
       "train": {"batch_size": 32, "warmup_steps": 1, "stage_warmup_steps": 1, "lr": 2e-3, "min_lr": 1e-5},
       "chain": [{"model": "test/A", "epochs": 1}, {"model": "test/B", "epochs": 1, "growth": "preserve"}]}


@pytest.mark.parametrize(("growth", "starts_at_parent"), [("preserve", True), ("corner", False)])
def test_grown_stage_records_its_distance_from_the_parent(tmp_path: Path, growth: str,
                                                          starts_at_parent: bool) -> None:
    raw = {**RAW, "chain": [RAW["chain"][0], {**RAW["chain"][1], "growth": growth}]}
    results = train_run(config_from_dict(raw), tmp_path, progress=False)
    diag = results["chain-2"]["diagnostics"]
    assert set(diag) == {"cka_image_start", "cka_image_end", "cka_text_start", "cka_text_end", "update_norm"}
    if starts_at_parent:   # function-preserving growth: the same embeddings at step 0
        assert diag["cka_image_start"] == pytest.approx(1.0, abs=1e-6)
        assert diag["cka_text_start"] == pytest.approx(1.0, abs=1e-6)
        md = write_report([tmp_path])[1]
        row = next(line for line in md.splitlines() if line.startswith("| test/B | 1.000 → "))
        assert f"{diag['update_norm']:.3f} |" in row and "Distance from the parent" in md
    else:                  # the paper's corner copy does not start from the parent's function
        assert diag["cka_image_start"] < 0.99
    assert diag["update_norm"] > 0 and results["chain-1"]["diagnostics"] == {}
    again = train_run(config_from_dict(raw), tmp_path, progress=False)   # recorded once, read back
    assert again["chain-2"]["diagnostics"] == diag
