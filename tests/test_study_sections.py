"""The generated time-to-target study sections (benchmarks/study_sections.py) and the parity experiments' variants
behind them (benchmarks/experiments.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import experiments  # noqa: E402


def test_wall_clock_at_parity_is_a_measurement_only_without_contention() -> None:
    from study_sections import _ttt_wall

    def stat(x: float) -> dict:
        return {"mean": x, "std": 0.0, "n": 1}

    assert _ttt_wall({"acceleration_flops": stat(2.0)}) == ""    # baselines' probes without wall clocks
    assert _ttt_wall({"acceleration_wall": stat(2.345), "acceleration_wall_caveat": None, "lower_bound": True}) == \
        "; training wall-clock at parity **≥ 2.35×**, measured (no stage contended)"
    assert _ttt_wall({"acceleration_wall": stat(1.5), "acceleration_wall_caveat": "B contended"}) == \
        "; training wall-clock at parity 1.50×, indicative only (B contended)"


def test_fixed_fraction_variants_are_listed_beside_the_parity_figures() -> None:
    """The real-data study's fixed-fraction variants: the same family and recipe at the paper's fractions of the
    baselines' epochs, no stopping; each is reported by its FLOPs figure and its grown members' held-out deltas."""
    from study_sections import _fixed_lines

    exp = experiments.EXPERIMENTS["parity_real"]
    for name, epochs in (("fixed-openclipart-2ep", 2.0), ("fixed-openclipart-8ep", 8.0)):
        cfg = experiments.variant_config(next(v for v in exp.variants if v.name == name), seed=0, extra=[])
        assert [m.epochs for m in cfg.chain] == [epochs, *(epochs * e / 128 for e in (24, 18, 15))]
        assert cfg.data.kind == "openclipart" and not any(m.until or m.target for m in cfg.chain)
    summary = {"family": {"acceleration_flops": {"mean": 4.567}},
               "members": [{"model": "a", "method": "chain", "epochs": 2}, {"model": "a", "method": "individual"},
                           {"model": "b", "method": "chain", "epochs": 0.375, "delta_zeroshot_top1": -1.25,
                            "delta_retrieval_r1": 0.5}]}
    assert _fixed_lines([("fixed-x", 2, summary)], ("zeroshot_top1", "retrieval_r1")) == [
        "- fixed-x (grown members at the paper's fixed fractions: 0.375 epochs, no stopping; 2 seeds): family "
        "acceleration **4.57×** in counted FLOPs; held-out Δ against the baselines (zero-shot top-1 / retrieval R@1): "
        "b -1.2 / +0.5", ""]


def test_the_synthetic_headline_under_time_to_target_keeps_parity_ncmb_members() -> None:
    """parity_ttt changes only the baseline arm's protocol: parity-NCMB's grown members (caps, probes, recipe),
    128-epoch baselines on 2 seeds under the stopping rule, every grown member until its baselines."""
    (ttt,) = experiments.EXPERIMENTS["parity_ttt"].variants
    ref = next(v for v in experiments.EXPERIMENTS["parity"].variants if v.name == "parity-NCMB")
    a, b = (experiments.variant_config(v, seed=0, extra=[]) for v in (ttt, ref))
    assert (a.parity_protocol, a.target_seeds, a.baseline_epochs) == ("time-to-target", 2, 128)
    for x, y in zip(a.chain[1:], b.chain[1:]):
        assert (x.model, x.epochs, x.probe_every, x.lr, x.schedule, x.patch_dropout) == \
            (y.model, y.epochs, y.probe_every, y.lr, y.schedule, y.patch_dropout)
        assert x.until == "baseline"
