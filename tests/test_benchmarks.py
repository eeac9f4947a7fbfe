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


def test_lm_experiment_runs_at_test_size(tmp_path, monkeypatch) -> None:
    """The language-model study is runnable: its first variant on the test family, a few steps."""
    monkeypatch.setattr(experiments, "RUNS", tmp_path)
    exp = experiments.EXPERIMENTS["lm"]
    variant = exp.variants[0]
    n = len(variant.chain)
    (tmp_path / "corpus.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 40)
    extra = [*(f"chain.{i}.model=\"lm/test-{x}\"" for i, x in enumerate("ABCD"[:n])),
             f"data.path=\"{tmp_path / 'corpus.txt'}\"", "data.num_samples=16", "data.eval_samples=4",
             "baseline_epochs=1", *(f"chain.{i}.epochs=1" for i in range(n)), "train.batch_size=8", "baselines=false"]
    run_dir = experiments.run_variant(exp, variant, seed=0, extra=extra)
    assert (run_dir / f"chain/{n:02d}-lm_test-{'ABCD'[n - 1]}/result.json").is_file()
