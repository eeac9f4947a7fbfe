"""`compt demo`: the first command a user runs is run here (quick size), its configs validate, and its closing
line is computed from the table it follows."""

from __future__ import annotations

from pathlib import Path

import pytest

from compt.cli import main
from compt.commands.demo import demo_config_path
from compt.config import load_config
from compt.report import closing_line, load_run, summarise


@pytest.mark.parametrize(("quick", "lm"), [(False, False), (True, False), (False, True), (True, True)])
def test_every_demo_config_validates(quick: bool, lm: bool) -> None:
    cfg = load_config(demo_config_path(quick, lm))
    assert cfg.baselines and len(cfg.chain) >= 3


def test_demo_quick_runs_and_closes_with_what_its_table_says(tmp_path: Path, capsys) -> None:
    assert main(["demo", "--quick", "--run-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    summary = summarise([load_run(tmp_path)])
    line = closing_line(summary)
    assert line in out and line.startswith("what this shows: family acceleration ")
    assert f"{summary['family']['acceleration_flops']['mean']:.2f}× in counted FLOPs" in line
    grown = [m for m in summary["members"] if m["method"] == "chain"][1:]
    for m in grown:
        assert f"{m['model']} {m['delta_zeroshot_top1']:+.1f} zero-shot top-1" in line
    reached = sum(m["delta_zeroshot_top1"] >= 0 and m["delta_retrieval_r1"] >= 0 for m in grown)
    assert f"— {reached} of {len(grown)} reach their baseline on every metric" in line
    for m in grown:   # the demo trains each grown member until it matches its baseline (validation split)
        verdict = "reached" if m["stopping"]["reached"] else "missed"
        assert f"{m['model']} {verdict} its target at {m['stopping']['epoch']['mean']:.3g} epochs" in line
    parity = summary["family"]["parity"]
    assert (f"acceleration at parity {parity['acceleration_flops']['mean']:.2f}×" if parity["reached_all"]
            else "no acceleration at parity") in line


def _summary(deltas: list[float], key: str, label: str) -> dict:
    members = [{"model": "m1", "method": "chain"}, {"model": "m1", "method": "individual"}]
    for i, d in enumerate(deltas, start=2):
        members += [{"model": f"m{i}", "method": "chain", f"delta_{key}": d},
                    {"model": f"m{i}", "method": "individual"}]
    return {"metrics": [[key, label]], "members": members,
            "family": {"acceleration_flops": {"mean": 3.0}, "acceleration_wall": {"mean": 2.5}}}


def test_closing_line_reads_each_metric_in_its_direction() -> None:
    clip = closing_line(_summary([1.0, -0.5], "zeroshot_top1", "zero-shot top-1"))
    assert clip == ("what this shows: family acceleration 3.00× in counted FLOPs (2.50× wall-clock); grown members "
                    "against their baselines: m2 +1.0 zero-shot top-1; m3 -0.5 zero-shot top-1 — 1 of 2 reach their "
                    "baseline on every metric")
    lm = closing_line(_summary([-0.04, 0.01], "val_loss", "held-out loss"))   # lower is better
    assert "m2 -0.040 held-out loss; m3 +0.010 held-out loss — 1 of 2 reach" in lm
