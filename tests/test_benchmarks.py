"""The experiment definitions and the results helpers of benchmarks/ (no training here)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import experiments  # noqa: E402
from make_results import matched_epoch  # noqa: E402


def test_every_variant_is_a_valid_config() -> None:
    for exp in experiments.EXPERIMENTS.values():
        for v in exp.variants:
            cfg = experiments.variant_config(v, seed=1, extra=[])
            assert [m.model for m in cfg.chain] == list(v.chain) and cfg.train.seed == 1 and cfg.baselines


def test_paper_regime_uses_the_papers_epoch_fractions() -> None:
    v = next(v for v in experiments.EXPERIMENTS["paper_regime"].variants if v.name == "paper-alloc")
    cfg = experiments.variant_config(v, seed=0, extra=[])
    assert cfg.individual_epochs == 32 and cfg.chain[0].epochs == 32
    assert [m.epochs for m in cfg.chain[1:]] == [6.0, 4.5, 3.75]          # 24/128, 18/128, 15/128 of 32
    assert [m.distill_weight for m in cfg.chain[1:]] == [50.0] * 3 and cfg.train.eval_every_epochs == 4


def test_stage_lr_reaches_only_the_grown_members() -> None:
    v = next(v for v in experiments.EXPERIMENTS["stage_lr"].variants if v.name == "lr5e-4")
    cfg = experiments.variant_config(v, seed=0, extra=[])
    assert cfg.chain[0].lr is None and [m.lr for m in cfg.chain[1:]] == [5e-4] * 3


@pytest.mark.parametrize("value, expect", [
    (10.0, 2.0),      # halfway from (0, 0) to the first evaluation (epoch 4, 20)
    (25.0, 6.0),      # between epochs 4 (20) and 8 (30)
    (30.0, 8.0),      # first reached exactly
    (31.0, None),     # never reached: the curve's maximum is 30
])
def test_matched_epoch_interpolates_the_first_crossing(value: float, expect: float | None) -> None:
    history = [{"epoch": 4, "m": 20.0}, {"epoch": 8, "m": 30.0}, {"epoch": 12, "m": 28.0}, {"epoch": 16}]
    got = matched_epoch(history, "m", value)
    assert got == (None if expect is None else pytest.approx(expect))


def test_variant_table_marks_wall_clock_that_is_not_a_clean_measurement(tmp_path: Path) -> None:
    from make_results import variant_table
    from test_wall_conditions import BUSY, CLEAN, STAGES, write_run

    from compt.report import load_run, summarise

    runs = {"clean": dict.fromkeys(STAGES, CLEAN), "busy": {**dict.fromkeys(STAGES, CLEAN), "chain/02-test_B": BUSY},
            "old": {}}
    table = variant_table([(name, summarise([load_run(write_run(tmp_path / name, c))])) for name, c in runs.items()])
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()[2:]}
    assert "| 2.86× |" in rows["clean"] and "| 2.86× † |" in rows["busy"] and "| 2.86× ? |" in rows["old"]
