"""Parity protocols (`compt.parity`): targets from the median of several baseline seeds, and the time-to-target
protocol where the baselines train under the members' stopping rule and both arms' cost to the target is
measured the same way."""

import json
import math
import statistics
from pathlib import Path

import pytest

from compt import chain as chain_mod
from compt.config import config_from_dict, validate
from compt.errors import UserError
from compt.parity import median_target, resolve_parity
from compt.report import format_markdown, load_run, summarise
from compt.time_to_target import first_meeting_probe

KEYS = ["zeroshot_top1", "retrieval_r1"]
RAW = {"name": "ttt", "baseline_epochs": 2, "baselines": True, "parity_protocol": "time-to-target", "target_seeds": 2,
       "data": {"kind": "synthetic", "num_samples": 64, "eval_samples": 32, "probe_samples": 0},
       "train": {"batch_size": 16, "warmup_steps": 1, "stage_warmup_steps": 1, "seed": 3},
       "chain": [{"model": "test/A", "epochs": 2},
                 {"model": "test/B", "epochs": 2, "growth": "preserve", "until": "baseline", "probe_every": 0.5}]}


def cfg_of(**top):
    cfg = config_from_dict({**RAW, **top})
    validate(cfg)
    return cfg


def test_time_to_target_plans_every_baseline_on_every_seed_under_the_stopping_rule() -> None:
    cfg = cfg_of(baseline_probe_every=0.5)
    stages = {s.key: s for s in chain_mod.plan_stages(cfg, True)}
    assert list(stages) == ["chain-1", "baseline-1", "baseline-1-seed4", "baseline-2", "baseline-2-seed4", "chain-2"]
    assert stages["baseline-2-seed4"].directory == "baselines/test_B-seed4"
    assert chain_mod.stage_train(cfg, stages["baseline-2-seed4"]).seed == 4
    assert chain_mod.stage_train(cfg, stages["baseline-2"]).seed == 3
    spec = chain_mod.stage_spec(cfg, stages["baseline-2"], 64)
    assert (spec.until, spec.schedule, spec.probe_every, spec.target) == ("record", "wsd", 0.5, {})
    # member 1's baseline is its own stage (a stopping schedule), never chain stage 1
    assert chain_mod.baseline_dir(cfg, 0) == "baselines/test_A"
    assert resolve_parity(cfg_of(target_seeds=None)).seeds == (3, 4, 5)   # time-to-target: 3 seeds by default
    assert resolve_parity(cfg_of(baseline_probe_every=None)).probe_every == 0.5   # a quarter of baseline_epochs


def test_baseline_curve_keeps_one_seed_and_member_1_doubling_as_its_baseline() -> None:
    cfg = cfg_of(parity_protocol="baseline-curve", target_seeds=None)
    assert [s.key for s in chain_mod.plan_stages(cfg, True)] == ["chain-1", "baseline-2", "chain-2"]
    cfg = cfg_of(parity_protocol="baseline-curve", target_seeds=2)
    assert [s.key for s in chain_mod.plan_stages(cfg, True)] == ["chain-1", "baseline-1-seed4", "baseline-2",
                                                                 "baseline-2-seed4", "chain-2"]
    assert chain_mod.stage_spec(cfg, chain_mod.individual_stage(cfg, 1, 4), 64).until == ""


@pytest.mark.parametrize(("top", "match"), [
    ({"parity_protocol": "fastest"}, "parity_protocol"),
    ({"baselines": False}, "baselines = true"),
    ({"target_seeds": 1}, "at least 2"),
    ({"parity_protocol": "baseline-curve", "baseline_probe_every": 1.0}, "time-to-target"),
    ({"baseline_probe_every": 3.0}, "baseline_probe_every"),
    ({"baseline_probe_every": 1e-9}, "probes"),
    ({"parity_protocol": "baseline-curve", "baselines": False, "target_seeds": 2,
      "chain": [RAW["chain"][0], {**RAW["chain"][1], "until": None, "target": {"zeroshot_top1": 1.0}}]},
     "baselines = true"),
])
def test_bad_parity_settings_are_one_line_errors(top: dict, match: str) -> None:
    with pytest.raises(UserError, match=match):
        cfg_of(**top)


def test_median_target_and_the_first_meeting_probe() -> None:
    assert median_target([{"a": 1.0}, {"a": 9.0}, {"a": 4.0}], ["a"]) == {"a": 4.0}
    assert median_target([{"a": 1.0}, {"a": 2.0}], ["a"]) == {"a": 1.5}   # not the first seed's, not the max
    probes = [{"a": 3.0, "loss": 2.0, "flops": 1}, {"a": 5.0, "loss": 3.0, "flops": 2}, {"a": 6.0, "loss": 1.0,
                                                                                         "flops": 3}]
    assert first_meeting_probe(probes, {"a": 4.0}, [])["flops"] == 2
    assert first_meeting_probe(probes, {"a": 4.0, "loss": 1.5}, ["loss"])["flops"] == 3   # lower is better
    assert first_meeting_probe(probes, {"a": 7.0}, []) is None


@pytest.fixture(scope="module")
def ttt_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("ttt")
    chain_mod.train_run(cfg_of(), run_dir, progress=False)
    return run_dir


def _result(run_dir: Path, stage: str) -> dict:
    return json.loads((run_dir / stage / "result.json").read_text())


def test_baselines_probe_to_their_cap_and_the_target_is_the_median_of_their_seeds(ttt_run: Path) -> None:
    finals = []
    for stage in ("baselines/test_B", "baselines/test_B-seed4"):
        res = _result(ttt_run, stage)
        stops = res["stopping"]
        assert stops["until"] == "record" and not stops["reached"] and res["steps"] == 8   # never stopped
        assert [p["step"] for p in stops["probes"]] == [2, 4, 6, 8] and not any(p["met"] for p in stops["probes"])
        assert all(p["end"] > p["step"] for p in stops["probes"][:-1])   # branches cooled down past the probe step
        finals.append(stops["probes"][-1])
    assert finals[0]["zeroshot_top1"] != finals[1]["zeroshot_top1"]   # two seeds, two results
    target = _result(ttt_run, "chain/02-test_B")["stopping"]["target"]
    for k in KEYS:
        assert target[k] == pytest.approx(statistics.median([f[k] for f in finals]), abs=1e-6)


def test_both_arms_cost_to_target_is_read_the_same_way_from_the_probes(ttt_run: Path) -> None:
    run = load_run(ttt_run)
    summary = summarise([run])
    parity = summary["family"]["parity"]
    assert parity["protocol"] == "time-to-target"
    arms = {a["model"]: a for a in parity["arms"]}
    walls = {"chain": 0.0, "baseline": 0.0}
    for i, model in enumerate(("test/A", "test/B")):
        seeds = [_result(ttt_run, d)["stopping"]["probes"] for d in
                 (f"baselines/{model.replace('/', '_')}", f"baselines/{model.replace('/', '_')}-seed4")]
        chain = _result(ttt_run, chain_mod.stage_dir("chain", i, model))
        target = chain["stopping"]["target"] if i else median_target([p[-1] for p in seeds], KEYS)
        costs = [next((p["flops"] for p in probes if all(p[k] >= v for k, v in target.items())), math.inf)
                 for probes in seeds]
        full = [_result(ttt_run, d)["train_flops"] for d in
                (f"baselines/{model.replace('/', '_')}", f"baselines/{model.replace('/', '_')}-seed4")]
        by_hand = statistics.median(f if math.isinf(c) else c for c, f in zip(costs, full))   # never met: its whole
        runs = [_result(ttt_run, d) for d in
                (f"baselines/{model.replace('/', '_')}", f"baselines/{model.replace('/', '_')}-seed4")]
        walls["baseline"] += statistics.median(
            next((p["wall_s"] for p in probes if all(p[k] >= v for k, v in target.items())), r["wall_clock_s"])
            for probes, r in zip(seeds, runs))
        lineage = ttt_run / chain_mod.stage_dir("chain", i, model) / "lineage.json"
        grow = json.loads(lineage.read_text()).get("grow_s", 0.0) if lineage.is_file() else 0.0
        walls["chain"] += chain["wall_clock_s"] + grow   # a grown member's time to grow it counts
        a = arms[model]
        assert a["chain"]["mean"] == chain["train_flops"]
        assert a["baseline"]["mean"] == pytest.approx(by_hand)
        assert a["seeds_reached"] == sum(math.isfinite(c) for c in costs) and a["seeds"] == 2
    assert parity["reached_all"]
    assert parity["acceleration_wall"]["mean"] == pytest.approx(walls["baseline"] / walls["chain"])
    text = format_markdown(summary)
    assert "cost to the target, both arms" in text and "(training wall-clock, both arms to the same probes)" in text
    assert "individual" in text and "not reached by the cap" not in text.split("test/B: ")[0]   # records don't stop


def test_time_to_target_acceleration_is_baseline_arm_over_chain_arm() -> None:
    from compt.runs import RunSummary, StageRow
    from compt.time_to_target import time_to_target

    def row(flops: float, probes: list[dict] | None = None, until: str = "record", target=None) -> StageRow:
        stop = {"until": until, "reached": until != "record", "target": target or {}, "probes": probes or []}
        return StageRow(model="m", method="x", epochs=1, flops=flops, cumulative_flops=flops, wall_s=1, metrics={},
                        stopping=stop if probes is not None else {})

    base = [[row(10, [{"a": 1, "flops": 4}, {"a": 3, "flops": 10}]), row(12, [{"a": 2, "flops": 5},
                                                                               {"a": 5, "flops": 12}]),
             row(11, [{"a": 4, "flops": 6}, {"a": 4, "flops": 11}])],
            [row(30, [{"a": 9, "flops": 20}, {"a": 9, "flops": 30}])] * 3]
    chain = [row(10), row(8, [{"a": 9, "flops": 8}], until="baseline", target={"a": 8})]
    run = RunSummary(name="x", run_dir="x", chain=chain, individual=[b[0] for b in base], cfg=None,
                     baseline_seeds=base)
    out = time_to_target(run, 2, ["a"], [])
    # member 1's target: the median of its seeds' finals (3, 5, 4) = 4 → costs: never (seed 1: counted at its whole
    # schedule, 10), 12 (its second probe: the first is 2), 6 → median 10, a lower bound; member 2: its own target
    # 8 → 20 on every seed
    assert out["members"][0]["target"] == {"a": 4} and out["members"][0]["baseline_final"] == {"a": 4}
    assert out["members"][0]["baseline_costs"] == [None, 12.0, 6.0] and out["members"][0]["baseline_cost"] == 10.0
    assert out["members"][0]["censored"] and not out["members"][1]["censored"] and out["lower_bound"]
    assert out["baseline_flops"] == 30.0 and out["chain_flops"] == 18.0 and out["reached_all"]


def test_both_arms_wall_clock_to_target_is_read_from_the_same_probes() -> None:
    from compt.runs import RunSummary, StageRow
    from compt.time_to_target import time_to_target

    def row(wall: float, probes: list[dict] | None = None, until: str = "record", target=None) -> StageRow:
        stop = {"until": until, "reached": until != "record", "target": target or {}, "probes": probes or []}
        return StageRow(model="m", method="x", epochs=1, flops=wall, cumulative_flops=wall, wall_s=wall, metrics={},
                        stopping=stop if probes is not None else {})

    def probe(a: float, wall: float | None) -> dict:
        return {"a": a, "flops": 1.0, **({} if wall is None else {"wall_s": wall})}

    base = [[row(10, [probe(1, 4), probe(3, 9)]), row(12, [probe(2, 5), probe(5, 11)]),
             row(11, [probe(4, 6), probe(4, 10)])], [row(30, [probe(9, 20), probe(9, 29)])] * 3]
    chain = [row(10), row(8, [probe(9, 7)], until="baseline", target={"a": 8})]
    run = RunSummary(name="x", run_dir="x", chain=chain, individual=[b[0] for b in base], cfg=None,
                     baseline_seeds=base)
    out = time_to_target(run, 2, ["a"], [])
    # member 1 (target 4): seed 1 never meets it (its whole stage, 10 s), seed 2 at its second probe (11 s), seed 3
    # at its first (6 s) → median 10; member 2 (target 8): 20 s on every seed. The chain: its stages' wall clocks.
    assert [m["baseline_wall"] for m in out["members"]] == [10.0, 20.0]
    assert out["baseline_wall"] == 30.0 and out["chain_wall"] == 18.0
    base[1] = [row(30, [probe(9, None), probe(9, 29)])] * 3       # a probe written before probes kept wall_s
    assert time_to_target(run, 2, ["a"], [])["baseline_wall"] is None
