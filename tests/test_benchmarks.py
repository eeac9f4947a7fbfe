"""The experiment definitions and the results helpers of benchmarks/ (no training here)."""

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import experiments  # noqa: E402
from make_results import equal_loss_costs, matched_epoch, second_half_gain  # noqa: E402


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


@pytest.mark.parametrize("value, expect", [
    (2.75, 1.5),      # halfway down from the first evaluation (epoch 1, 3.0) to the second (epoch 2, 2.5)
    (3.2, 1.0),       # reached by the first evaluation: its epoch (the untrained loss is not recorded)
    (2.2, None),      # never: the curve's minimum is 2.4
])
def test_matched_epoch_of_a_loss_finds_the_first_time_it_gets_down_to_the_value(value, expect) -> None:
    history = [{"epoch": 1, "val_loss": 3.0}, {"epoch": 2, "val_loss": 2.5}, {"epoch": 3, "val_loss": 2.4},
               {"epoch": 4, "val_loss": 2.45}]
    got = matched_epoch(history, "val_loss", value)
    assert got == (None if expect is None else pytest.approx(expect))


class _Stage:
    def __init__(self, epochs: float, flops: float, wall_s: float, loss: float, history: list[dict] = ()) -> None:
        self.epochs, self.flops, self.wall_s, self.history = epochs, flops, wall_s, list(history)
        self.metrics = {"val_loss": loss}


def test_equal_loss_costs_take_the_baselines_share_of_its_schedule_until_it_matches_the_chain() -> None:
    curve = [{"epoch": e, "val_loss": v} for e, v in ((1, 3.0), (2, 2.5), (3, 2.4), (4, 2.3))]
    run = type("Run", (), {})()
    run.chain = [_Stage(4, 10.0, 1.0, 2.9), _Stage(1, 8.0, 2.0, 2.75), _Stage(1, 8.0, 2.0, 2.0)]
    run.individual = [_Stage(4, 10.0, 1.0, 2.9), _Stage(4, 40.0, 20.0, 2.3, curve), _Stage(4, 80.0, 40.0, 2.3, curve)]
    costs = equal_loss_costs(run)
    assert costs[0] == (10.0, 1.0, True)                      # member 1: the same training in both
    assert costs[1] == (pytest.approx(15.0), pytest.approx(7.5), True)   # 1.5 of 4 epochs of 40 FLOPs, 20 s
    assert costs[2] == (80.0, 40.0, False)                    # never reaches 2.0: the whole baseline, a lower bound


def test_paper_protocol_is_the_papers_literal_schedule() -> None:
    for v in experiments.EXPERIMENTS["paper_protocol"].variants:
        cfg = experiments.variant_config(v, seed=0, extra=[])
        assert cfg.individual_epochs == 128 and cfg.chain[0].epochs == 128
        assert [m.epochs for m in cfg.chain[1:]] == [24.0, 18.0, 15.0] and cfg.train.eval_every_epochs == 16


def test_saturation_grid_spends_a_fixed_budget_at_the_papers_fractions() -> None:
    cfgs = [experiments.variant_config(v, seed=0, extra=[]) for v in experiments.EXPERIMENTS["saturation"].variants]
    full = [c for c in cfgs if c.data.num_samples * c.individual_epochs == 320_000]
    assert len(full) == 3                                              # 2.5k × 128 = 10k × 32 = 40k × 8
    for c in cfgs:
        e = c.individual_epochs
        assert [m.epochs for m in c.chain[1:]] == pytest.approx([e * 24 / 128, e * 18 / 128, e * 15 / 128])
        assert c.train.eval_every_epochs * 8 == e                       # 8 evaluations per baseline


def test_save_summaries_copies_small_files_only(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(experiments, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(experiments, "SUMMARIES", tmp_path / "summaries")
    stage = tmp_path / "runs" / "exp" / "v" / "seed0" / "chain" / "01-m"
    for sub in ("tb", "hf", "../../data"):
        (stage / sub).mkdir(parents=True, exist_ok=True)
    for name in ("result.json", "metrics.jsonl", "final.pt", "last.pt", "tb/events.json", "hf/config.json",
                 "../../data/tokenizer.json"):
        (stage / name).write_text("x")
    (stage.parents[1] / "config.toml").write_text("x")
    out = experiments.save_summaries(stage.parents[1])
    got = sorted(str(f.relative_to(out)) for f in out.rglob("*") if f.is_file())
    assert got == ["chain/01-m/metrics.jsonl", "chain/01-m/result.json", "config.toml"]


class _Row:
    def __init__(self, epochs: float, history: list[dict], metrics: dict) -> None:
        self.epochs, self.history, self.metrics = epochs, history, metrics


class _Run:
    def __init__(self, base: _Row) -> None:
        self.individual = [None, base]


def test_second_half_gain_is_end_minus_the_evaluation_nearest_the_middle() -> None:
    base = _Row(8, [{"epoch": 2, "m": 10.0}, {"epoch": 4, "m": 20.0}, {"epoch": 8, "m": 26.0}], {"m": 26.0})
    assert second_half_gain(_Run(base), 1, "m") == pytest.approx(6.0)
    assert second_half_gain(_Run(base), 0, "m") is None


def test_make_results_stops_on_a_run_it_cannot_read(tmp_path: Path) -> None:
    import make_results

    bad = tmp_path / "beyond_paper" / "protocol" / "seed0"
    bad.mkdir(parents=True)
    (bad / "run.json").write_text("{}")   # a run folder without its config
    with pytest.raises(SystemExit, match="holds no config.toml"):
        make_results.main(["--runs", str(tmp_path), "--out", str(tmp_path / "out" / "results.md")])


def _masked(text: str) -> str:
    """A results doc without what changes from one generation to the next: the commit and the machine."""
    import re

    text = re.sub(r"commit [0-9a-f]{7,40}", "commit C", text)
    return re.sub(r" on [^;_]*cores, torch [^;_]*?, Python [0-9.]+", " on M", text)


@pytest.mark.slow
def test_docs_results_regenerates_from_the_committed_run_summaries(tmp_path: Path) -> None:
    import make_results

    out = tmp_path / "results.md"
    assert make_results.main(["--out", str(out)]) == 0
    committed = Path(__file__).resolve().parents[1] / "docs" / "results.md"
    assert _masked(out.read_text()) == _masked(committed.read_text()), \
        "docs/results.md is not what benchmarks/make_results.py makes from benchmarks/runs: regenerate it"


def test_variant_table_marks_wall_clock_that_is_not_a_clean_measurement(tmp_path: Path) -> None:
    from make_results import variant_table
    from test_wall_conditions import BUSY, CLEAN, STAGES, write_run

    from compt.report import load_run, summarise

    runs = {"clean": dict.fromkeys(STAGES, CLEAN), "busy": {**dict.fromkeys(STAGES, CLEAN), "chain/02-test_B": BUSY},
            "old": {}}
    table = variant_table([(name, summarise([load_run(write_run(tmp_path / name, c))])) for name, c in runs.items()])
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()[2:]}
    assert "| 2.86× |" in rows["clean"] and "| 2.86× † |" in rows["busy"] and "| 2.86× ? |" in rows["old"]


def test_lm_experiment_runs_at_test_size(tmp_path, monkeypatch) -> None:
    """The language-model study is runnable: its first variant on the test family, a few steps."""
    monkeypatch.setattr(experiments, "RUNS", tmp_path)
    monkeypatch.setattr(experiments, "SUMMARIES", tmp_path / "summaries")
    exp = experiments.EXPERIMENTS["lm"]
    variant = exp.variants[0]
    n = len(variant.chain)
    (tmp_path / "corpus.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 40)
    extra = [*(f"chain.{i}.model=\"lm/test-{x}\"" for i, x in enumerate("ABCD"[:n])),
             f"data.path=\"{tmp_path / 'corpus.txt'}\"", "data.num_samples=16", "data.eval_samples=4",
             "baseline_epochs=1", *(f"chain.{i}.epochs=1" for i in range(n)), "train.batch_size=8", "baselines=false"]
    run_dir = experiments.run_variant(exp, variant, seed=0, extra=extra)
    assert (run_dir / f"chain/{n:02d}-lm_test-{'ABCD'[n - 1]}/result.json").is_file()


def test_lm_parity_is_lm_base_with_the_bpe_under_time_to_target() -> None:
    """Grown members stop at their baselines, capped at the baselines' 2 epochs and probed every half epoch, with
    lm-base's token KL (α = 1) and window count; the tokenizer is the committed folder, resolved against the
    repository; the roads LM family runs in the same regime, so both share their baselines' settings."""
    (v,) = experiments.EXPERIMENTS["lm_parity"].variants
    cfg = experiments.variant_config(v, seed=0, extra=[])
    base = experiments.variant_config(experiments.EXPERIMENTS["lm"].variants[0], seed=0, extra=[])
    assert cfg.data.tokenizer == str(experiments.ROOT / "benchmarks/data/pydoc-bpe2k")
    assert (cfg.parity_protocol, cfg.target_seeds, cfg.baseline_epochs) == ("time-to-target", 2, 2)
    assert cfg.data.num_samples == base.data.num_samples and cfg.data.path == base.data.path
    for m in cfg.chain[1:]:
        assert (m.until, m.epochs, m.probe_every, m.cooldown_shape) == ("baseline", 2, 0.5, "sqrt")
        assert (m.distill, m.distill_weight) == (base.chain[1].distill, base.chain[1].distill_weight) == ("kl", 1.0)
    road = next(r for r in experiments.EXPERIMENTS["roads"].variants if r.name == "lm3-bpe2k-2ep")
    shared = experiments.variant_config(road, seed=0, extra=[])
    assert (shared.data, shared.train, shared.baseline_epochs) == (cfg.data, cfg.train, cfg.baseline_epochs)


def test_lm_parity_runs_at_test_size(tmp_path, monkeypatch) -> None:
    """The LM parity study is runnable: on the test family (its vocabulary resized to the BPE's 2,048), a few steps,
    baselines on 2 seeds and every grown member stopping at them."""
    monkeypatch.setattr(experiments, "RUNS", tmp_path)
    monkeypatch.setattr(experiments, "SUMMARIES", tmp_path / "summaries")
    exp = experiments.EXPERIMENTS["lm_parity"]
    (variant,) = exp.variants
    (tmp_path / "corpus.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 200)
    extra = [*(f"chain.{i}.model=\"lm/test-{x}\"" for i, x in enumerate("ABCD")),
             f"data.path=\"{tmp_path / 'corpus.txt'}\"", "data.num_samples=16", "data.eval_samples=4",
             "train.batch_size=8", "train.warmup_steps=1", "train.stage_warmup_steps=1"]
    run_dir = experiments.run_variant(exp, variant, seed=0, extra=extra)
    result = json.loads((run_dir / "chain/04-lm_test-D/result.json").read_text())
    assert result["metrics"]["val_loss"] > 0
    assert json.loads((run_dir / "chain/04-lm_test-D/hf/config.json").read_text())["vocab_size"] == 2048
    from study_sections import lm_parity_section

    assert "_not run yet_" in lm_parity_section(tmp_path / "none")
    section = "\n".join(lm_parity_section(tmp_path))
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| ttt-pydoc-bpe2k-2ep | 0 |")]
    assert [r[2] for r in rows] == [f"lm/test-{x}" for x in "ABCD"] and "held-out Δ loss" in section
    member = json.loads((run_dir / "chain/02-lm_test-B/result.json").read_text())["metrics"]["val_loss"]
    base = json.loads((run_dir / "baselines/lm_test-B/result.json").read_text())["metrics"]["val_loss"]
    assert rows[1][-1] == f"{member - base:+.3f} |"


VIT_SIZES = ("XS", "S", "M", "L")


def test_vit_parity_is_vit_base_under_time_to_target() -> None:
    """The four vit-tiny members on vit-base's Fashion-MNIST draw; grown members stop at their baselines (2 seeds),
    capped at the baselines' 4 epochs and probed every epoch, with vit-base's preserve + logit KL (α = 1)."""
    (v,) = experiments.EXPERIMENTS["vit_parity"].variants
    cfg = experiments.variant_config(v, seed=0, extra=[])
    assert cfg.paradigm.name == "vit" and [m.model for m in cfg.chain] == [f"vit-tiny/{x}" for x in VIT_SIZES]
    assert (cfg.parity_protocol, cfg.target_seeds, cfg.baseline_epochs) == ("time-to-target", 2, 4)
    assert (cfg.data.kind, cfg.data.num_samples, cfg.data.eval_samples, cfg.data.val_samples) == \
        ("fashion-mnist", 2000, 1000, 500)
    for m in cfg.chain[1:]:
        assert (m.until, m.epochs, m.probe_every, m.cooldown_shape) == ("baseline", 4, 1, "sqrt")
        assert (m.growth, m.distill, m.distill_weight) == ("preserve", "kl", 1.0)


def test_vit_parity_runs_at_test_size(tmp_path, monkeypatch) -> None:
    """The ViT parity study is runnable: its four members on a few Fashion-MNIST-format images, baselines on 2 seeds
    and every grown member stopping at them; its section tabulates the run."""
    from test_data_real import fake_fashion

    monkeypatch.setattr(experiments, "RUNS", tmp_path)
    monkeypatch.setattr(experiments, "SUMMARIES", tmp_path / "summaries")
    exp = experiments.EXPERIMENTS["vit_parity"]
    (variant,) = exp.variants
    extra = [f"data.path=\"{fake_fashion(tmp_path / 'fm', n=40)}\"", "data.num_samples=16", "data.eval_samples=8",
             "data.val_samples=8", "train.batch_size=8", "train.warmup_steps=1", "train.stage_warmup_steps=1"]
    run_dir = experiments.run_variant(exp, variant, seed=0, extra=extra)
    assert (run_dir / "baselines/vit-tiny_L-seed1/result.json").is_file()
    from study_sections import vit_parity_section

    assert "_not run yet_" in vit_parity_section(tmp_path / "none")
    section = "\n".join(vit_parity_section(tmp_path))
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| ttt-fashion-vit4-4ep | 0 |")]
    assert [r[2] for r in rows] == [f"vit-tiny/{x}" for x in VIT_SIZES] and "held-out Δ top-1" in section
    member = json.loads((run_dir / "chain/03-vit-tiny_M/result.json").read_text())["metrics"]["top1"]
    base = json.loads((run_dir / "baselines/vit-tiny_M/result.json").read_text())["metrics"]["top1"]
    assert rows[2][-1] == f"{member - base:+.1f} |"

@pytest.mark.parametrize(("name", "drop"), [("flip50", 0.5), ("flip75", 0.75), ("flip50-lr4e-3-fast-decay", 0.5),
                                                  ("wide-flip50-lr4e-3-fast-decay", 0.5)])
def test_flip_variant_trains_longer_at_equal_counted_flops(name: str, drop: float) -> None:
    import dataclasses

    from compt.clip.flops import model_flops
    from compt.clip.models import get_model_config

    v = next(v for v in experiments.EXPERIMENTS["beyond_paper"].variants if v.name == name)
    cfg = experiments.variant_config(v, seed=0, extra=[])
    for m, paper in zip(cfg.chain[1:], (24.0, 18.0, 15.0)):
        full = get_model_config(m.model)
        dropped = dataclasses.replace(full, vision=dataclasses.replace(full.vision, patch_dropout=drop))
        assert m.patch_dropout == drop and m.epochs > paper
        assert m.epochs * model_flops(dropped).per_sample(1) == pytest.approx(paper * model_flops(full).per_sample(1),
                                                                            rel=1e-3)


def test_growth_only_protocol_variant_keeps_the_paper_epochs_without_a_teacher() -> None:
    v = next(v for v in experiments.EXPERIMENTS["beyond_paper"].variants if v.name == "growth-only")
    cfg = experiments.variant_config(v, seed=0, extra=[])
    assert [m.epochs for m in cfg.chain] == [128.0, 24.0, 18.0, 15.0]
    assert [m.distill for m in cfg.chain[1:]] == ["none"] * 3 and cfg.train.eval_every_epochs == 16


def _summary(deltas: list[tuple[float, float]], flops: float, wall: float | None, status: str, seeds: int) -> dict:
    chain = [{"model": f"m{i}", "method": "chain", "flops": {"n": seeds}} for i in range(len(deltas) + 1)]
    for m, (zs, r1) in zip(chain[1:], deltas):
        m.update(delta_zeroshot_top1=zs, delta_retrieval_r1=r1)
    family = {"acceleration_flops": {"mean": flops, "n": seeds}, "acceleration_wall_status": status}
    if wall is not None:
        family["acceleration_wall"] = {"mean": wall, "std": 0.0, "n": seeds}
    return {"members": chain, "family": family,
            "metrics": [["zeroshot_top1", "zero-shot top-1"], ["retrieval_r1", "retrieval R@1"]]}


@pytest.mark.parametrize("deltas, flops, wall, status, seeds, misses", [
    ([(0.5, -0.9), (-1.0, 2.0), (0.0, 0.0)], 4.1, 3.6, "clean", 2, []),
    ([(0.5, -1.2), (-1.0, 2.0), (0.0, 0.0)], 4.1, 3.6, "clean", 2, ["retrieval R@1 -1.2"]),
    ([(0.5, 0.0), (-3.0, 2.0), (0.0, 0.0)], 3.9, 3.6, "contended", 1,
     ["zero-shot top-1 -3.0", "3.90× FLOPs", "wall-clock not measured clean", "1 seed"]),
    ([(0.5, 0.0), (0.0, 0.0), (0.0, 0.0)], 4.5, 3.4, "clean", 3, ["3.40× wall-clock"]),
    ([(0.5, 0.0), (0.0, 0.0), (0.0, 0.0)], 4.5, None, "not recorded", 2, ["no wall-clock"]),
])
def test_target_check_names_every_condition_a_variant_misses(deltas, flops, wall, status, seeds, misses) -> None:
    from make_results import target_check

    got = target_check(_summary(deltas, flops, wall, status, seeds))
    assert got["misses"] == misses
    assert got["worst"]["zero-shot top-1"] == min(d[0] for d in deltas)


def test_target_check_tells_a_metric_the_data_lacks_from_an_unfinished_baseline() -> None:
    from make_results import target_check

    no_retrieval = _summary([(0.5, 0.0)] * 3, 4.5, 4.0, "clean", 2)
    unfinished = _summary([(0.5, 0.0)] * 3, 4.5, 4.0, "clean", 2)
    for m in no_retrieval["members"][1:] + unfinished["members"][1:]:
        del m["delta_retrieval_r1"]
    for m in unfinished["members"][1:]:
        m["retrieval_r1"] = {"mean": 10.0, "std": 0.0, "n": 2}
    assert target_check(no_retrieval)["misses"] == ["no retrieval R@1 on this data"]
    assert target_check(unfinished)["misses"] == ["baselines not finished"]


def test_target_section_lists_only_four_member_variants_at_four_times(tmp_path: Path) -> None:
    from make_results import target_section

    ok = _summary([(0.0, 0.0)] * 3, 4.2, 3.8, "clean", 2)
    slow = _summary([(0.0, 0.0)] * 3, 2.5, 2.4, "clean", 2)
    three = _summary([(0.0, 0.0)] * 2, 5.0, 4.0, "clean", 2)
    text = "\n".join(target_section([("a/ok", ok), ("a/slow", slow), ("a/three", three)]))
    assert "| a/ok | 4.20× | 3.80 ± 0.00× | +0.0 | +0.0 | 2 | **met** |" in text
    assert "a/slow" not in text and "a/three" not in text and "1 of 1 variants meet the target." in text


class _Member:
    def __init__(self, zs: float, r1: float, model: str = "tiny/ViT-X") -> None:
        self.metrics, self.model = {"zeroshot_top1": zs, "retrieval_r1": r1}, model


class _Chain:
    def __init__(self, *members: tuple[float, float]) -> None:
        self.chain = [_Member(*m) for m in members]


def test_paired_deltas_compare_recipes_seed_by_seed_on_shared_seeds_only() -> None:
    from make_results import paired_deltas

    ref = [(Path("seed0"), _Chain((30, 20), (31, 22))), (Path("seed1"), _Chain((29, 18), (30, 20)))]
    variant = [(Path("seed0"), _Chain((30, 20), (33, 27))), (Path("seed1"), _Chain((29, 18), (31, 21))),
               (Path("seed2"), _Chain((0, 0), (99, 99)))]     # no reference run for seed 2: left out
    d = paired_deltas(variant, ref)
    assert d["n"] == 2
    assert d[(1, "zeroshot_top1")] == pytest.approx(1.5) and d[(1, "retrieval_r1")] == pytest.approx(3.0)
    assert paired_deltas(variant[2:], ref) == {"n": 0}


def test_paired_table_names_each_recipes_reference_and_skips_recipes_without_shared_seeds() -> None:
    from make_results import paired_table

    ref = [(Path("seed0"), _Chain((30, 20), (31, 22)))]
    rows = [("better", [(Path("seed0"), _Chain((30, 20), (33, 27)))], "p/ref", ref),
            ("unpaired", [(Path("seed5"), _Chain((30, 20), (40, 40)))], "p/ref", ref)]
    lines = paired_table(rows).splitlines()
    assert lines[2] == "| better | p/ref | ViT-X +2.0 | ViT-X +5.0 | 1 |" and len(lines) == 3


@pytest.mark.parametrize("k", [1.5, 1.25])
def test_wide_headroom_variants_scale_the_recipes_epochs_and_stay_past_4x(k: float) -> None:
    from compt.plan import plan_chain

    variants = {v.name: v for v in experiments.EXPERIMENTS["beyond_paper"].variants}
    recipe = experiments.variant_config(variants["wide-flip50-lr4e-3-fast-decay"], seed=0, extra=[])
    more = experiments.variant_config(variants[f"wide-recipe-{k:g}x-epochs"], seed=0, extra=[])
    assert [m.epochs for m in more.chain[1:]] == pytest.approx([k * m.epochs for m in recipe.chain[1:]], abs=1e-3)
    assert more.chain[0].epochs == more.baseline_epochs == 128
    assert more.train.teacher_cache                       # the runs cache the teacher: priced as they are run
    accel = [plan_chain(c, cached_teacher=True).acceleration for c in (more, recipe)]
    assert 4.0 < accel[0] < accel[1]


def test_bench_growth_states_the_ranges_it_measured() -> None:
    import bench_growth

    rows = [{"pair": "a:b", "op": "preserve", "threads": 1, "grow_s": 2.0, "fresh_s": 1.0, "rss_before_gb": 0.5,
             "peak_gb": 1.7, "child_gb": 1.0, "ratio": 1.7},
            {"pair": "a:b", "op": "corner", "threads": 1, "grow_s": 1.5, "fresh_s": 1.0, "rss_before_gb": 0.7,
             "peak_gb": 1.8, "child_gb": 1.0, "ratio": 1.8}]
    text = bench_growth.markdown(rows, "python benchmarks/bench_growth.py", "0.1 0.1 0.1")
    assert "Measured here: `Δ × child` 1.10–1.20, process baseline before growth 0.50–0.70 GiB, over 2 runs." in text
    assert "≈ 1.0–1.1" not in text and "≈ 0.8 GiB" not in text


def test_parity_variant_targets_the_committed_baselines_and_caps_at_3x_the_recipe() -> None:
    from experiments import EXPERIMENTS, FOUR_FLIP50, baseline_metrics, variant_config

    v = EXPERIMENTS["parity"].variants[0]
    cfg = variant_config(v, 0, [])
    for i, m in enumerate(cfg.chain[1:]):
        assert m.epochs == pytest.approx(3 * FOUR_FLIP50[i]) and m.probe_every == pytest.approx(FOUR_FLIP50[i])
        assert m.schedule == "wsd" and m.patch_dropout == 0.5 and m.lr == 4e-3
        assert m.target == baseline_metrics(v.targets_from, 0, m.model)
    summary = experiments.SUMMARIES / "paper_protocol/protocol-NTCS/seed0/baselines/tiny_ViT-S/result.json"
    got = json.loads(summary.read_text())["metrics"]
    assert cfg.chain[3].target == {"zeroshot_top1": got["zeroshot_top1"], "retrieval_r1": got["retrieval_r1"]}


def test_parity_member_costs_the_probes_and_reads_the_baselines_curve() -> None:
    from study_sections import parity_member

    from compt.runs import StageRow

    base = StageRow(model="m", method="individual", epochs=128, flops=100.0, cumulative_flops=100.0, wall_s=1.0,
                    metrics={"zeroshot_top1": 40.0, "retrieval_r1": 30.0},
                    history=[{"flops": 50.0, "zeroshot_top1": 41.0, "retrieval_r1": 29.0},
                             {"flops": 75.0, "zeroshot_top1": 40.5, "retrieval_r1": 30.5},
                             {"flops": 100.0, "zeroshot_top1": 40.0, "retrieval_r1": 30.0}])
    probes = [{"epoch": 5.0, "met": False, "zeroshot_top1": 38.0, "retrieval_r1": 25.0},
              {"epoch": 10.0, "met": True, "zeroshot_top1": 41.0, "retrieval_r1": 31.0}]
    chain = StageRow(model="m", method="chain", epochs=10.0, flops=20.0, cumulative_flops=30.0, wall_s=1.0,
                     metrics={"zeroshot_top1": 39.0, "retrieval_r1": 31.0},
                     stopping={"reached": True, "probes": probes, "stopped": probes[1]})
    m = parity_member(chain, base)
    assert m["reached"] and m["chain_flops"] == 20.0 and m["baseline_flops"] == 75.0   # first eval at ≥ both finals
    assert m["delta"] == {"zeroshot_top1": -1.0, "retrieval_r1": 1.0} and m["best"]["retrieval_r1"] == 31.0


# ---------------------------------------------------------------------------- stages copied between variants
def _stage_results(run_dir: Path) -> dict[str, Path]:
    return {str(r.parent.relative_to(run_dir)): r for r in sorted(run_dir.glob("*/*/result.json"))}


def _copied_tree(tmp_path: Path) -> tuple[Path, Path]:
    """Two runs of a synthetic experiment, made under /elsewhere/runs/bench and moved here like the committed
    summaries: `donor` trained every stage; `copy` trained chain stage 2 and holds donor's member 1 and baseline."""
    from test_wall_conditions import CLEAN, STAGES, write_run

    runs = {name: write_run(tmp_path / "exp" / name / "seed0", dict.fromkeys(STAGES, CLEAN)) for name in ("donor",
                                                                                                          "copy")}
    for name, run_dir in runs.items():
        for stage, result in _stage_results(run_dir).items():
            trained_in = "copy" if name == "copy" and stage == "chain/02-test_B" else "donor"
            res = json.loads(result.read_text())
            res["checkpoint"] = f"/elsewhere/runs/bench/exp/{trained_in}/seed0/{stage}/final.pt"
            result.write_text(json.dumps(res))
    return runs["donor"], runs["copy"]


def test_copied_stages_are_found_from_the_committed_result_files(tmp_path: Path) -> None:
    donor, copy = _copied_tree(tmp_path)
    assert experiments.copied_stages(donor) == {}
    assert experiments.copied_stages(copy) == {"chain/01-test_A": "exp/donor/seed0/chain/01-test_A",
                                               "baselines/test_B": "exp/donor/seed0/baselines/test_B"}
    bare = tmp_path / "exp" / "bare" / "seed0"   # a result naming only "final.pt" (test runs) is not a copy
    (bare / "chain" / "01-test_A").mkdir(parents=True)
    (bare / "chain" / "01-test_A" / "result.json").write_text(json.dumps({"checkpoint": "final.pt"}))
    (bare / experiments.REUSED).write_text(json.dumps({"baselines/test_B": "exp/donor/seed0/baselines/test_B"}))
    assert experiments.copied_stages(bare) == {"baselines/test_B": "exp/donor/seed0/baselines/test_B"}


def test_wall_clock_with_copied_stages_is_marked_and_misses_the_target(tmp_path: Path) -> None:
    from make_results import copied_note, target_check, variant_summary, variant_table

    from compt.report import load_run

    donor, copy = _copied_tree(tmp_path)
    rows = [(d.parent.name, variant_summary([load_run(d)])) for d in (donor, copy)]
    assert rows[1][1]["family"]["wall_copied"] == {"copied": 2, "of": 3, "from": ["exp/donor"]}
    table = {line.split(" | ")[0].strip("| "): line for line in variant_table(rows).splitlines()[2:]}
    assert "| 2.86× |" in table["donor"] and "| 2.86× ‡ |" in table["copy"]
    assert copied_note(rows) == ["‡ Stages behind the wall-clock acceleration that were copied from another "
                                 "variant's run (their wall-clock was measured there): copy: 2 of 3 from exp/donor.",
                                 ""]
    mixed = _summary([(0.5, 0.0)] * 3, 4.5, 4.0, "clean", 2)
    mixed["family"]["wall_copied"] = rows[1][1]["family"]["wall_copied"]
    assert target_check(mixed)["misses"] == ["wall-clock mixes runs"] and target_check(mixed)["mark"] == " ‡"


def test_reuse_finished_records_what_it_copied_and_from_where(tmp_path: Path, monkeypatch) -> None:
    from compt.chain import fingerprint, plan_stages

    monkeypatch.setattr(experiments, "RUNS", tmp_path)
    cfg = experiments.variant_config(experiments.EXPERIMENTS["main"].variants[0], seed=0, extra=[])
    stage = plan_stages(cfg, cfg.baselines)[0]
    donor = tmp_path / "exp" / "other" / "seed0" / stage.directory
    donor.mkdir(parents=True)
    (donor / "lineage.json").write_text(json.dumps({"fingerprint": fingerprint(cfg, stage)}, default=str))
    (donor / "result.json").write_text(json.dumps({"checkpoint": str(donor / "final.pt")}))
    run_dir = tmp_path / "exp" / "me" / "seed0"
    assert experiments.reuse_finished(run_dir, cfg) == 1
    record = json.loads((run_dir / experiments.REUSED).read_text())
    assert record == {stage.directory: f"exp/other/seed0/{stage.directory}"} == experiments.copied_stages(run_dir)
    shutil.rmtree(donor)   # the stage is trained here next time: no longer listed as copied
    (run_dir / stage.directory / "result.json").unlink()
    assert experiments.reuse_finished(run_dir, cfg) == 0
    assert json.loads((run_dir / experiments.REUSED).read_text()) == {}


def test_road_costs_sum_every_members_cost_to_its_target_and_drop_the_largest() -> None:
    """Two members: the road's cost is Σ chain costs, the individual road Σ baseline costs; the largest member is
    the one with the largest baseline cost; a baseline seed that missed makes the individual figure a bound."""
    from roads_section import road_costs, roads_section

    def arm(model: str, chain: float, base: float, reached: int = 2) -> dict:
        return {"model": model, "chain": {"mean": chain}, "baseline": {"mean": base}, "seeds_reached": reached,
                "seeds": 2}

    summary = {"family": {"parity": {"arms": [arm("big", 10.0, 40.0), arm("small", 3.0, 5.0, reached=1)]}},
               "members": [{"method": "chain", "model": "big"},
                           {"method": "chain", "model": "small", "stopping": {"reached": True}}]}
    got = road_costs(summary)
    assert (got["road"], got["individual"], got["largest"]) == (13.0, 45.0, "big")
    assert (got["largest_chain"], got["largest_base"], got["bound"], got["reached"]) == (10.0, 40.0, True, True)
    summary["members"][1]["stopping"]["reached"] = False
    assert road_costs(summary)["reached"] is False
    assert roads_section(Path("/nonexistent"))[-2] == "_not run yet_"


def test_roads_conclusion_names_the_cheaper_road_over_the_seeds() -> None:
    """Up cheaper from scratch on both seeds, the down-chain cheaper once its largest member exists; a missed
    target on one seed is said."""
    from roads_section import PAIRS, conclusions

    def summary(chain_big: float, chain_small: float, reached: bool = True) -> dict:
        arms = [{"model": "big", "chain": {"mean": chain_big}, "baseline": {"mean": 40e12}, "seeds_reached": 2,
                 "seeds": 2},
                {"model": "small", "chain": {"mean": chain_small}, "baseline": {"mean": 5e12}, "seeds_reached": 2,
                 "seeds": 2}]
        return {"family": {"parity": {"arms": arms}},
                "members": [{"method": "chain", "model": "small", "stopping": {"reached": reached}}]}

    family, up, down = PAIRS[0]
    rows = {(up, 0): summary(10e12, 3e12), (down, 0): summary(30e12, 4e12),
            (up, 1): summary(12e12, 3e12), (down, 1): summary(30e12, 6e12, reached=False)}
    (line,) = conclusions(rows)
    assert line.startswith(f"- **{family}** (2 seed(s)): trained from scratch, the up-chain (CoM-PT) is cheaper — "
                           "14 TFLOPs against 35 TFLOPs on average, individual training 45 TFLOPs. When big already "
                           "exists, the down-chain costs 5 TFLOPs against the up-chain's 14 TFLOPs: the down-chain is "
                           "cheaper (the down-chain missed")
    assert "1 of 2 seed(s)" in line


def test_a_missed_member_is_reported_with_its_best_probe_and_parent_distance() -> None:
    """The results say by how much a grown member missed (best probe vs target, each metric) and how far it moved
    from its parent (CKA per representation, update norm); members that reached are not named."""
    from study_sections import _missed

    def stat(x: float) -> dict:
        return {"mean": x, "std": 0.0, "n": 1}

    chain = {"a": {"model": "a", "stopping": {"reached": 1}},
             "b": {"model": "b", "stopping": {"reached": 0, "target": {"val_loss": stat(2.5)},
                                              "best_missed": {"val_loss": stat(2.61)}},
                   "diagnostics": {"cka_hidden_start": stat(1.0), "cka_hidden_end": stat(0.9123),
                                   "update_norm": stat(0.25)}}}
    assert _missed(chain) == ("b did not reach its target by the cap (held-out loss best probe 2.610 vs target "
                              "2.500; CKA to its parent: hidden 0.912, relative update norm 0.250)")


def test_summaries_name_paths_in_the_checkout_relative_to_it(tmp_path) -> None:
    """A study's tokenizer folder under the checkout is committed as a repository path, other paths as they are."""
    text = json.dumps({"tokenizer": f"{experiments.ROOT}/benchmarks/data/pydoc-bpe2k", "other": "/usr/share/x"})
    assert json.loads(experiments.repo_relative(text)) == {"tokenizer": "benchmarks/data/pydoc-bpe2k",
                                                          "other": "/usr/share/x"}

