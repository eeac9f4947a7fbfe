"""Train a grown member until it reaches its target (`compt.train.stopping`): the probe schedule's math, a probe
that misses leaves the trajectory untouched, a probe that meets the target is the stage's final model, the cost
counts every branch, a kill mid-probe resumes to the same result, `until = "baseline"` reads the baseline's
validation metrics — on the toy paradigm (fast), CLIP and a language model."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import kill_in_probe, untimed

from compt.chain import train_run
from compt.checkpoint import load_checkpoint
from compt.config import config_from_dict, validate
from compt.errors import UserError
from compt.train import stopping
from compt.train.stopping import branch_total, cooldown_start, meets, probe_steps
from tests.test_paradigm import RAW, toy  # noqa: F401  (the toy paradigm's fixture)


# ----------------------------------------------------------------------------------------------- the math
@pytest.mark.parametrize("warmup", [0, 3, 10])
@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.5, 0.9])
def test_branch_total_is_the_shortest_run_whose_cooldown_starts_at_the_probe(warmup: int, fraction: float) -> None:
    for s in range(max(warmup, 1), 300):
        want = next(n for n in range(s + 1, 10 * s + 20) if cooldown_start(n, warmup, fraction) >= s)
        assert branch_total(s, warmup, fraction) == want, s


def test_probe_steps_every_p_epochs_after_warmup_and_before_the_cap_cools_down() -> None:
    # 64 samples, batch 16: 4 steps per epoch; cap 32 steps, warmup 1, f = 0.2: the cap's cooldown starts at 26
    assert cooldown_start(32, 1, 0.2) == 26
    assert probe_steps(total=32, warmup=1, fraction=0.2, every_epochs=2, samples=64, batch=16) == (8, 16, 24)
    assert branch_total(24, 1, 0.2) == 30 and branch_total(8, 1, 0.2) == 10
    # 1.1 epochs = 4.4 steps: probes at ⌈4.4·k⌉ = 5, 9, 14, 18, 22, 27 (22 exactly, not 23), those inside the
    # warmup (10 steps) skipped, the last before the cap's cooldown at 28
    assert cooldown_start(32, 10, 0.2) == 28
    assert probe_steps(total=32, warmup=10, fraction=0.2, every_epochs=1.1, samples=64, batch=16) == (14, 18, 22, 27)


def test_meets_reads_each_metric_in_its_direction() -> None:
    assert meets({"acc": 40.0, "loss": 2.0}, {"acc": 40.0, "loss": 2.0}, ["loss"])
    assert not meets({"acc": 39.9, "loss": 2.0}, {"acc": 40.0, "loss": 2.0}, ["loss"])
    assert not meets({"acc": 41.0, "loss": 2.1}, {"acc": 40.0, "loss": 2.0}, ["loss"])
    assert not meets({"acc": math.nan}, {"acc": 0.0}, [])
    assert not meets({}, {"acc": 0.0}, [])


# ----------------------------------------------------------------------------------------------- toy chains
def toy_cfg(target: dict | None = None, until: str | None = None, schedule: str | None = None, baselines=False):
    chain = [dict(m) for m in RAW["chain"][:2]]
    chain[1].update(epochs=8, probe_every=2.0)
    if schedule:
        chain[1]["schedule"] = schedule
    if target is not None:
        chain[1]["target"] = target
    if until is not None:
        chain[1]["until"] = until
    if target is None and until is None:
        chain[1].pop("probe_every")
    cfg = config_from_dict(RAW | {"chain": chain, "baselines": baselines, "baseline_epochs": 6})
    validate(cfg)
    return cfg


def grown(run: Path) -> dict[str, Any]:
    return json.loads((run / "chain/02-toy_mlp-8/result.json").read_text())


def final(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "chain/02-toy_mlp-8/final.pt").state_dict


@pytest.mark.usefixtures("toy")
def test_probes_that_miss_leave_the_trajectory_as_a_plain_wsd_run(tmp_path: Path) -> None:
    plain = train_run(toy_cfg(schedule="wsd"), tmp_path / "plain", progress=False)["chain-2"]
    missed = train_run(toy_cfg(target={"val_mse": 0.0}), tmp_path / "miss", progress=False)["chain-2"]
    a, b = final(tmp_path / "plain"), final(tmp_path / "miss")
    assert all(torch.equal(a[k], b[k]) for k in a)          # bit-identical: the branches were undone
    assert missed["metrics"]["val_mse"] == plain["metrics"]["val_mse"]
    stop = missed["stopping"]
    assert not stop["reached"] and [p["step"] for p in stop["probes"]] == [8, 16, 24, 32]
    assert stop["probe_steps"] == (10 - 8) + (20 - 16) + (30 - 24) == 12
    assert missed["steps"] == 32 and missed["samples"] == (32 + 12) * 16
    assert missed["train_flops"] == pytest.approx(plain["train_flops"] * 44 / 32)   # every branch step paid
    assert stop["stopped"]["step"] == 32 and stop["stopped"]["end"] == 32


@pytest.mark.usefixtures("toy")
def test_the_first_probe_that_meets_the_target_is_the_final_model(tmp_path: Path) -> None:
    ref = train_run(toy_cfg(target={"val_mse": 0.0}), tmp_path / "ref", progress=False)["chain-2"]
    second = ref["stopping"]["probes"][1]["val_mse"]   # between the 2nd probe's validation MSE and the 1st's
    first = ref["stopping"]["probes"][0]["val_mse"]
    assert second < first
    got = train_run(toy_cfg(target={"val_mse": (first + second) / 2}), tmp_path / "stop", progress=False)["chain-2"]
    stop = got["stopping"]
    assert stop["reached"] and stop["stopped"]["step"] == 16 and stop["stopped"]["end"] == 20
    assert [p["met"] for p in stop["probes"]] == [False, True]
    assert stop["stopped"]["val_mse"] == pytest.approx(second)   # the same branch as in the reference run
    assert got["steps"] == 20 and stop["probe_steps"] == 2 and got["samples"] == 22 * 16
    assert got["history"][-1]["step"] == 20            # the stopped model's held-out evaluation
    assert got["train_flops"] == pytest.approx(ref["train_flops"] * 22 / 44)
    lines = [json.loads(x) for x in (tmp_path / "stop/chain/02-toy_mlp-8/metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if x["kind"] == "probe"] == [8, 16]


@pytest.mark.usefixtures("toy")
def test_a_stage_killed_inside_a_probe_resumes_to_the_same_result(tmp_path: Path, monkeypatch) -> None:

    cfg = toy_cfg(target={"val_mse": 0.0})
    reference = train_run(cfg, tmp_path / "ref", progress=False)["chain-2"]
    calls: list[int] = []
    kill_in_probe(monkeypatch, 16, calls)
    with pytest.raises(RuntimeError, match="killed in the probe"):
        train_run(cfg, tmp_path / "run", progress=False)
    last = load_checkpoint(tmp_path / "run/chain/02-toy_mlp-8/last.pt").train_state["progress"]
    assert last["step"] == 16 and [p["step"] for p in last["probes"]] == [8]   # saved before the branch
    monkeypatch.undo()
    resumed = train_run(cfg, tmp_path / "run", progress=False)["chain-2"]
    assert untimed(resumed["stopping"]) == untimed(reference["stopping"]) and resumed["metrics"] == reference["metrics"]
    a, b = final(tmp_path / "ref"), final(tmp_path / "run")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.usefixtures("toy")
def test_until_baseline_trains_the_baselines_first_and_targets_their_validation_metrics(tmp_path: Path) -> None:
    from compt.chain import plan_stages

    cfg = toy_cfg(until="baseline", baselines=True)
    assert [s.key for s in plan_stages(cfg, True)] == ["chain-1", "baseline-2", "chain-2"]
    results = train_run(cfg, tmp_path, progress=False)
    base = json.loads((tmp_path / "baselines/toy_mlp-8/result.json").read_text())
    assert set(base["validation"]) == {"val_mse"}
    assert base["validation"]["val_mse"] != base["metrics"]["val_mse"]   # another split
    stop = results["chain-2"]["stopping"]
    assert stop["until"] == "baseline" and stop["target"] == {"val_mse": base["validation"]["val_mse"]}
    assert stop["reached"] == any(p["val_mse"] <= stop["target"]["val_mse"] for p in stop["probes"])


def _set_target(run: Path, target: dict[str, float]) -> None:
    """Rewrite the grown member's recorded target (what the report reads), keeping where it stopped."""
    path = run / "chain/02-toy_mlp-8/result.json"
    raw = json.loads(path.read_text())
    raw["stopping"]["target"] = target
    path.write_text(json.dumps(raw))


@pytest.mark.usefixtures("toy")
def test_the_report_says_where_each_member_stopped_and_the_acceleration_to_the_target(tmp_path: Path) -> None:
    from dataclasses import replace

    from compt.plan import human_flops
    from compt.report import closing_line, cost_to_reach, format_markdown, load_run, summarise

    cfg = toy_cfg(target={"val_mse": 1e6}, baselines=True)   # met at the first probe; far below the baseline
    cfg = replace(cfg, train=replace(cfg.train, eval_every_epochs=1))   # baselines evaluated every epoch
    train_run(cfg, tmp_path, progress=False)
    summary = summarise([load_run(tmp_path)])
    md = format_markdown(summary)
    assert "tiny" not in md and "- toy/mlp-8: reached at 2.5 epochs" in md   # branch_total(8) = 10 steps
    member1 = json.loads((tmp_path / "chain/01-toy_mlp-4/result.json").read_text())
    base = json.loads((tmp_path / "baselines/toy_mlp-8/result.json").read_text())
    grown_cost = grown(tmp_path)["train_flops"]
    first_member = cost_to_reach(member1["history"], {"val_mse": member1["metrics"]["val_mse"]})
    chain_cost = member1["train_flops"] + grown_cost
    # the target asks less than the baseline reached: its baseline's cost is its cost to reach the target (its
    # first evaluation), and the figure is not "at parity"
    to_target = (first_member + base["history"][0]["flops"]) / chain_cost
    assert base["history"][0]["flops"] < cost_to_reach(base["history"], {"val_mse": base["metrics"]["val_mse"]})
    assert summary["family"]["parity"]["acceleration_flops"]["mean"] == pytest.approx(to_target)
    assert "at parity" not in md and "at parity" not in closing_line(summary)
    assert f"- family acceleration to the given target (FLOPs; baseline-curve protocol: each baseline's cost, read " \
           f"off its evaluation curve, to first reach its member's target (member 1's: its own final metrics); the " \
           f"targets ask less than the baselines reached): " \
           f"{to_target:.2f}×" in md
    assert closing_line(summary).endswith(f"toy/mlp-8 reached its target at 2.5 epochs ({human_flops(grown_cost)}) "
                                          f"— acceleration to the given target {to_target:.2f}× in counted FLOPs")
    # a target at least the baseline's validation metrics (here: better than any): at parity, each baseline's
    # cost to reach its own final metrics
    _set_target(tmp_path, {"val_mse": 0.0})
    summary = summarise([load_run(tmp_path)])
    parity = (first_member + cost_to_reach(base["history"], {"val_mse": base["metrics"]["val_mse"]})) / chain_cost
    assert summary["family"]["parity"]["acceleration_flops"]["mean"] == pytest.approx(parity)
    assert f"family acceleration at parity (FLOPs; baseline-curve protocol: each baseline's cost, read off its " \
           f"evaluation curve, to first reach its own final metrics): {parity:.2f}×" in format_markdown(summary)
    assert closing_line(summary).endswith(f"— acceleration at parity {parity:.2f}× in counted FLOPs")
    # a baseline's cost to reach: the first evaluation meeting every value
    history = [{"flops": 1.0, "val_mse": 3.0}, {"flops": 2.0, "val_mse": 1.0}, {"flops": 3.0, "val_mse": 2.0}]
    assert cost_to_reach(history, {"val_mse": 2.0}) == 2.0 and cost_to_reach(history, {"val_mse": 0.5}) is None


def test_a_target_is_parity_only_when_it_asks_at_least_the_baselines_metrics() -> None:
    from compt.report import parity_name, targets_match

    both = ["zeroshot_top1", "val_loss"]
    base = {"zeroshot_top1": 40.0, "val_loss": 2.0, "train_loss": 1.0}   # train_loss is no headline metric
    assert targets_match({"zeroshot_top1": 40.0, "val_loss": 2.0}, base, both)
    assert targets_match({"zeroshot_top1": 41.0, "val_loss": 1.9}, base, both)
    assert not targets_match({"zeroshot_top1": 39.9, "val_loss": 2.0}, base, both)
    assert not targets_match({"zeroshot_top1": 40.0, "val_loss": 2.1}, base, both)    # lower is better
    assert not targets_match({"zeroshot_top1": 40.0}, base, both)                      # a metric left out
    assert not targets_match({"zeroshot_top1": 40.0}, {}, both)
    assert parity_name({"at_parity": True}) == "acceleration at parity"
    assert parity_name({"at_parity": False}) == "acceleration to the given target"


@pytest.mark.usefixtures("toy")
def test_member_1_used_as_it_is_is_not_free_at_parity_without_a_caveat(tmp_path: Path) -> None:
    from compt.checkpoint import save_checkpoint
    from compt.report import closing_line, cost_to_reach, format_markdown, load_run, summarise
    from tests.test_paradigm import SIZES, mlp

    torch.manual_seed(3)
    init = save_checkpoint(tmp_path / "init.pt", state_dict=mlp(SIZES["toy/mlp-4"]).state_dict(),
                           model_config=SIZES["toy/mlp-4"], lineage={})
    chain = [{"model": "toy/mlp-4", "epochs": 0, "init": str(init)},
             {**RAW["chain"][1], "epochs": 8, "probe_every": 2.0, "target": {"val_mse": 0.0}}]
    cfg = config_from_dict(RAW | {"chain": chain, "baselines": True, "baseline_epochs": 6})
    validate(cfg)
    train_run(cfg, tmp_path / "run", progress=False)
    _set_target(tmp_path / "run", {"val_mse": 0.0})
    raw = json.loads((tmp_path / "run/chain/02-toy_mlp-8/result.json").read_text())
    raw["stopping"]["reached"] = True   # as if it had: the figure is then defined
    (tmp_path / "run/chain/02-toy_mlp-8/result.json").write_text(json.dumps(raw))
    summary = summarise([load_run(tmp_path / "run")])
    bases = [json.loads((tmp_path / f"run/baselines/{m}/result.json").read_text()) for m in ("toy_mlp-4", "toy_mlp-8")]
    costs = [cost_to_reach(b["history"], {"val_mse": b["metrics"]["val_mse"]}) for b in bases]
    free, counted = sum(costs) / raw["train_flops"], sum(costs) / (raw["train_flops"] + costs[0])
    parity = summary["family"]["parity"]
    assert parity["acceleration_flops"]["mean"] == pytest.approx(free)
    assert parity["acceleration_flops_counting_init"]["mean"] == pytest.approx(counted)
    assert f"- member 1 starts from an existing checkpoint ({init}): the acceleration at parity above counts it at " \
           f"its own training cost only; counting its baseline's cost, it is {counted:.2f}×" in format_markdown(summary)
    assert closing_line(summary).endswith(f"acceleration at parity {free:.2f}× in counted FLOPs ({counted:.2f}× "
                                          f"counting member 1's baseline)")


@pytest.mark.parametrize(("member", "message"), [
    ({"until": "baseline"}, "needs baselines = true"),
    ({"until": "soon"}, "unknown until 'soon'"),
    ({"until": "baseline", "target": {"val_mse": 1.0}}, "not both"),
    ({"target": {"val_mse": 1.0}, "schedule": "cosine"}, "need schedule = \"wsd\""),
    ({"target": {"accuracy": 1.0}}, "unknown target metric of chain member 2 'accuracy'"),
    ({"target": {}}, "target is empty"),
    ({"probe_every": 1.0}, "probe_every needs until"),
    ({"target": {"val_mse": 1.0}, "probe_every": 9.0}, "probe_every must be in"),
    ({"target": {"val_mse": 1.0}, "decay_fraction": 1.0}, "decay_fraction must be below 1"),
    # 8 epochs: at most 1000 probes, every 0.008 epochs (a probe every 1e-9 epochs hung before its first step)
    ({"target": {"val_mse": 1.0}, "probe_every": 1e-9}, "at most 1,000 probes, so probe_every must be at least 0.008"),
    ({"target": {"val_mse": 1.0}, "probe_every": 0.0079}, "would probe 1.01e+03 times in the cap of 8 epochs"),
    ({"target": {"val_mse": math.nan}}, "target val_mse must be a finite number, got nan"),
    ({"target": {"val_mse": -math.inf}}, "target val_mse must be a finite number, got -inf"),
])
@pytest.mark.usefixtures("toy")
def test_bad_stopping_settings_are_one_line_errors(member: dict, message: str) -> None:
    chain = [dict(m) for m in RAW["chain"][:2]]
    chain[1].update(epochs=8, **member)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        validate(config_from_dict(RAW | {"chain": chain, "baselines": False}))


@pytest.mark.usefixtures("toy")
def test_probing_up_to_the_bound_is_accepted() -> None:
    chain = [dict(m) for m in RAW["chain"][:2]]
    chain[1].update(epochs=8, target={"val_mse": -5.0}, probe_every=0.008)   # exactly 1000; MSE has no bounds here
    validate(config_from_dict(RAW | {"chain": chain, "baselines": False}))


@pytest.mark.parametrize(("model", "target", "message"), [
    ("test/B", {"zeroshot_top1": 100.5}, "target zeroshot_top1 = 100.5 is outside the values zero-shot top-1 can "
                                         "take, [0, 100]"),
    ("test/B", {"retrieval_r1": -1.0}, "target retrieval_r1 = -1 is outside"),
    ("test/B", {"zeroshot_top1": math.inf}, "must be a finite number, got inf"),
    ("lm/test-B", {"val_ppl": 0.5}, "target val_ppl = 0.5 is outside the values held-out perplexity can take, "
                                    "[1, inf]"),
    ("lm/test-B", {"val_loss": -0.1}, "target val_loss = -0.1 is outside"),
])
def test_a_target_is_a_value_its_metric_can_take(model: str, target: dict, message: str) -> None:
    first = "test/A" if model == "test/B" else "lm/test-A"
    raw = {"name": "t", "data": {"kind": "text" if first.startswith("lm/") else "synthetic"},
           "chain": [{"model": first, "epochs": 1}, {"model": model, "epochs": 4, "target": target}]}
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate(config_from_dict(raw))
    edge = {k: (100.0 if k != "val_ppl" else 1.0) if k in ("zeroshot_top1", "val_ppl") else 0.0 for k in target}
    validate(config_from_dict({**raw, "chain": [raw["chain"][0], {**raw["chain"][1], "target": edge}]}))


def test_train_baselines_flag_satisfies_until_baseline(tmp_path: Path, monkeypatch, capsys) -> None:
    """`compt train CONFIG --baselines` is the same as baselines = true for the until = "baseline" check."""
    from compt import chain
    from compt.cli import main

    config = tmp_path / "run.toml"
    config.write_text("""name = "until"
baselines = false
[data]
num_samples = 64
[train]
batch_size = 16
[[chain]]
model = "test/A"
epochs = 1
[[chain]]
model = "test/B"
epochs = 1
until = "baseline"
""")
    seen = []
    monkeypatch.setattr(chain, "train_run", lambda cfg, run_dir, **kw: seen.append(cfg.baselines) or {})
    assert main(["train", str(config), "--run-dir", str(tmp_path / "run")]) == 2   # needs the baselines
    assert "until = \"baseline\" needs baselines = true" in capsys.readouterr().err
    assert main(["train", str(config), "--baselines", "--run-dir", str(tmp_path / "run")]) == 0
    assert seen == [True]


def test_the_plan_says_which_members_are_capped() -> None:
    from compt.commands.demo import demo_config_path
    from compt.config import load_config
    from compt.plan import format_plan, plan_chain

    cfg = load_config(demo_config_path(quick=False))
    plan = plan_chain(cfg)
    assert plan.capped == ("tiny/ViT-T", "tiny/ViT-C", "tiny/ViT-S")
    assert "tiny/ViT-T, tiny/ViT-C, tiny/ViT-S train until their target: their epochs are a cap" in format_plan(
        plan, cfg.name)


@pytest.mark.usefixtures("toy")
def test_member_1_cannot_stop() -> None:
    chain = [dict(m) for m in RAW["chain"][:2]]
    chain[0]["target"] = {"val_mse": 1.0}
    with pytest.raises(UserError, match="member 1 trains for its epochs"):
        validate(config_from_dict(RAW | {"chain": chain}))


def test_the_summary_names_the_met_probe_or_the_caps_end() -> None:
    probes = [{"step": 8, "end": 10, "met": False}, {"step": 16, "end": 20, "met": True}]
    assert stopping.summary({"a": 1.0}, "target", probes, 2)["stopped"] == probes[1]
    assert stopping.summary({"a": 1.0}, "target", probes[:1], 2)["stopped"] == probes[0]


# ----------------------------------------------------------------------------------------------- CLIP, LM
def test_a_clip_member_stops_on_the_synthetic_validation_split(tmp_path: Path) -> None:
    from compt.clip.data import build_eval_suite
    from compt.clip.models import get_model_config

    raw = {"name": "clip-stop", "data": {"num_samples": 64, "eval_samples": 32, "probe_samples": 0},
           "train": {"batch_size": 16, "warmup_steps": 2, "stage_warmup_steps": 1, "loader_workers": 0,
                     "log_every_steps": 4},
           "chain": [{"model": "tiny/ViT-N", "epochs": 1},
                     {"model": "tiny/ViT-T", "epochs": 4, "probe_every": 1.0, "target": {"zeroshot_top1": 0.0}}]}
    cfg = config_from_dict(raw)
    validate(cfg)
    result = train_run(cfg, tmp_path, progress=False)["chain-2"]
    stop = result["stopping"]
    assert stop["reached"] and stop["stopped"]["step"] == 4 and result["steps"] == branch_total(4, 1, 0.2)
    assert {"zeroshot_top1", "retrieval_r1"} <= set(stop["stopped"])
    model_cfg = get_model_config("tiny/ViT-T")
    held, val = build_eval_suite(cfg.data, model_cfg), build_eval_suite(cfg.data, model_cfg, validation=True)
    assert held.retrieval.tokens.shape[1] == val.retrieval.tokens.shape[1]
    assert not torch.equal(held.retrieval.tokens, val.retrieval.tokens)   # other scenes, other captions


def test_a_language_model_member_stops_on_validation_windows(tmp_path: Path) -> None:
    from compt.lm.data import LMData
    from compt.lm.text import validation

    raw = {"name": "lm-stop", "data": {"kind": "text", "num_samples": 64, "eval_samples": 8},
           "train": {"batch_size": 8, "warmup_steps": 2, "stage_warmup_steps": 1, "loader_workers": 0,
                     "log_every_steps": 4},
           "chain": [{"model": "lm/test-A", "epochs": 1},
                     {"model": "lm/test-B", "epochs": 2, "probe_every": 0.5, "target": {"val_loss": 100.0}}]}
    cfg = config_from_dict(raw)
    validate(cfg)
    result = train_run(cfg, tmp_path, progress=False)["chain-2"]
    stop = result["stopping"]
    assert stop["reached"] and stop["stopped"]["step"] == 4 and stop["stopped"]["val_loss"] <= 100.0
    train, held, _ = LMData(cfg, tmp_path)._data()
    val = validation(train, held, 8)
    assert len(val) == 8 and val.start >= len(train) * train.context + 1   # after the last training token
    assert val.start + 8 * val.context + 1 == held.start                   # and just before the held-out split
