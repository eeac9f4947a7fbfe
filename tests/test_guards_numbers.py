"""The numbers users read, on inputs where the right rule and a plausible wrong one differ: a stopping probe's
branch cooling down, a probe at the end of warmup, the default probe cadence; the family acceleration counting
member 1 when it trains further than its init; the closing line and the stopping lines for a lower-is-better
metric (LM loss); a baseline's cost to parity when it reaches its final metrics before its last evaluation.

Expected values are computed here by hand (or by an independent formula), never by the code under test."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from compt.chain import train_run
from compt.config import config_from_dict, validate
from compt.plan import format_plan, human_flops, plan_chain
from compt.report import closing_line, format_markdown, summarise
from compt.runs import RunSummary, StageRow
from compt.train.stopping import branch_total, cooldown_start, probe_steps
from tests.test_paradigm import RAW, toy  # noqa: F401  (the toy paradigm's fixture)


# ----------------------------------------------------------------------------------------------- stopping
def test_a_probe_exactly_at_the_end_of_warmup_is_taken() -> None:
    # 4 steps per epoch, probes every 2 epochs at 8, 16, 24 (the cap's cooldown starts at 32 − round(0.2·24) = 27)
    assert probe_steps(total=32, warmup=8, fraction=0.2, every_epochs=2, samples=64, batch=16) == (8, 16, 24)
    assert probe_steps(total=32, warmup=9, fraction=0.2, every_epochs=2, samples=64, batch=16) == (16, 24)
    assert probe_steps(total=32, warmup=0, fraction=0.2, every_epochs=0.25, samples=64, batch=16)[:2] == (1, 2)


def test_cooldown_start_and_branch_total_by_hand() -> None:
    """C = max(1, round(f·(T − w))) cooldown steps before T: at least one, even where f·(T − w) rounds to 0."""
    assert cooldown_start(100, 0, 0.2) == 80 and cooldown_start(32, 8, 0.2) == 27
    assert cooldown_start(11, 10, 0.1) == 10 and cooldown_start(10, 0, 0.04) == 9     # round(0.1), round(0.4) = 0
    assert branch_total(10, 10, 0.1) == 11 and branch_total(16, 8, 0.2) == 18
    for fraction in (1.0, 1.5):
        with pytest.raises(ValueError, match="cooldown fraction below 1"):
            branch_total(5, 0, fraction)


def _wsd(step: int, total: int, *, lr: float = 1e-2, low: float = 1e-4, warmup: int = 1, f: float = 0.2) -> float:
    """The documented warmup–stable–decay rate (`compt.train.optim.wsd_lr_at`'s docstring), written out again."""
    if step < warmup:
        return lr * (step + 1) / warmup
    cool = max(1, round(f * (total - warmup)))
    start = total - cool
    return lr if step < start else low + (lr - low) * (1 - (step - start + 1) / cool)


@pytest.mark.usefixtures("toy")
def test_probe_branches_cool_down_at_the_default_cadence(tmp_path: Path, monkeypatch) -> None:
    """A grown toy member with a target it never meets and no probe_every: probes every quarter of its 8 epochs
    (steps 8, 16, 24; the cap's end 32), each branch a WSD run of its own length L(s) = 10, 20, 30 that ends at
    min_lr — the lr of every optimizer step, branch steps included, against the formula."""
    from compt.train import trainer

    lrs: list[float] = []
    real = trainer._optimizer_step

    def logged(st, micro_batches):
        if st.spec.model.name == "toy/mlp-8":
            lrs.append(st.optimizer.param_groups[0]["lr"])
        return real(st, micro_batches)

    monkeypatch.setattr(trainer, "_optimizer_step", logged)
    chain = [dict(m) for m in RAW["chain"][:2]]
    chain[1].update(epochs=8, target={"val_mse": 0.0})               # no probe_every: the default cadence
    cfg = config_from_dict(RAW | {"chain": chain, "baselines": False})
    validate(cfg)
    result = train_run(cfg, tmp_path, progress=False)["chain-2"]
    stop = result["stopping"]
    assert [(p["step"], p["end"]) for p in stop["probes"]] == [(8, 10), (16, 20), (24, 30), (32, 32)]
    want = ([_wsd(s, 32) for s in range(0, 8)] + [_wsd(s, 10) for s in (8, 9)]
            + [_wsd(s, 32) for s in range(8, 16)] + [_wsd(s, 20) for s in range(16, 20)]
            + [_wsd(s, 32) for s in range(16, 24)] + [_wsd(s, 30) for s in range(24, 30)]
            + [_wsd(s, 32) for s in range(24, 32)])
    assert lrs == pytest.approx(want, rel=1e-12)
    assert lrs[9] == lrs[8 + 2 + 8 + 3] == pytest.approx(1e-4)        # every branch's last step trains at min_lr
    assert lrs[8] == pytest.approx(1e-4 + (1e-2 - 1e-4) / 2)           # L = 10: 2 cooldown steps


# ----------------------------------------------------------------------------------------------- plan
SMALL = {"name": "small", "baseline_epochs": 4, "data": {"num_samples": 10, "captions_per_image": 2},
         "chain": [{"model": "test/A", "epochs": 2, "init": "/nowhere/a.pt"},
                   {"model": "test/B", "epochs": 2, "distill": "fd"}]}


@pytest.mark.parametrize("epochs", [2, 0])
def test_plan_acceleration_counting_member_1_trained_further(epochs: int) -> None:
    """Member 1 from an init, trained `epochs` more: the chain pays that continued training, and counting member 1's
    own training from scratch (its individual cost) adds to it — it does not replace it."""
    f_a, f_b = 148_032 + 2 * 115_200, 563_136 + 2 * 229_888      # forward FLOPs with 2 captions (test_plan.py)
    raw = {**SMALL, "chain": [{**SMALL["chain"][0], "epochs": epochs}, SMALL["chain"][1]]}
    plan = plan_chain(config_from_dict(raw))
    ind_a, ind_b = 4 * 10 * 3 * f_a, 4 * 10 * 3 * f_b
    stage_a, stage_b = epochs * 10 * 3 * f_a, 2 * 10 * (3 * f_b + f_a)
    assert [m.stage_cost for m in plan.members] == [stage_a, stage_b]
    assert plan.chain_cost == stage_a + stage_b
    assert plan.acceleration == pytest.approx((ind_a + ind_b) / (stage_a + stage_b))
    assert plan.acceleration_counting_init == pytest.approx((ind_a + ind_b) / (stage_a + stage_b + ind_a))
    assert f"the family acceleration is {(ind_a + ind_b) / (stage_a + stage_b + ind_a):.2f}×" in \
        format_plan(plan, "small")


def test_human_flops_picks_the_largest_prefix_below_the_value() -> None:
    got = [human_flops(x) for x in (3.2e21, 1.5e18, 1e18, 9.99e17, 1.5e15, 1.5e12, 2.5e9, 999.0, -1.5e12)]
    assert got == ["3.2 ZFLOPs", "1.5 EFLOPs", "1 EFLOPs", "999 PFLOPs", "1.5 PFLOPs", "1.5 TFLOPs", "2.5 GFLOPs",
                   "999 FLOPs", "-1.5 TFLOPs"]


@pytest.mark.parametrize(("workers", "feed"), [(0, "333"), (3, "1,000"), (-1, "2,667")])
def test_loader_feed_counts_zero_workers_as_the_training_process_alone(workers: int, feed: str) -> None:
    """0 workers: the training process decodes, 1 / 3 ms = 333 samples/s; -1 (auto): 8 workers."""
    import dataclasses

    from compt.config import load_config
    from compt.plan import feed_warnings

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "paper-cc3m-vit.toml")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, loader_workers=workers))
    lines = feed_warnings(cfg, plan_chain(cfg))
    shown = max(workers, 0) if workers >= 0 else 8
    assert f"but {shown} loader workers at 3 ms per sample deliver about {feed} per rank" in lines[0]


def test_loader_feed_of_a_one_member_chain() -> None:
    from compt.plan import feed_warnings

    raw = {"name": "one", "data": {"kind": "csv", "path": "/nowhere/train.csv", "num_samples": 2_890_000},
           "chain": [{"model": "paper/ViT-T-16", "epochs": 1}]}
    cfg = config_from_dict(raw)
    assert [line.split()[1] for line in feed_warnings(cfg, plan_chain(cfg))] == ["paper/ViT-T-16"]


# ----------------------------------------------------------------------------------------------- report
LM_RAW = {"name": "lm-guard", "baselines": True, "baseline_epochs": 4, "data": {"kind": "text", "num_samples": 64},
          "chain": [{"model": "lm/test-A", "epochs": 1, "init": "/nowhere/a.pt"},
                    {"model": "lm/test-B", "epochs": 2, "target": {"val_loss": 3.1}}]}
G = 1e9


def _m(loss: float) -> dict[str, float]:
    return {"val_loss": loss, "val_ppl": math.exp(loss)}


def _row(model: str, method: str, flops: float, loss: float, *, epochs: float = 1.0,
         history: tuple[tuple[float, float], ...] = (), stopping: dict | None = None) -> StageRow:
    return StageRow(model=model, method=method, epochs=epochs, flops=flops, cumulative_flops=flops, wall_s=1.0,
                    metrics=_m(loss), history=[{"flops": f, **_m(x)} for f, x in history],
                    stopping=stopping or {})


def _stopping(reached: bool, probes: list[float]) -> dict:
    rows = [{"step": 4 * (i + 1), "end": 5 * (i + 1), "epoch": 0.5 * (i + 1), "met": reached and i == len(probes) - 1,
             **_m(x)} for i, x in enumerate(probes)]
    # a target at least the baselines' (3.1 ≤ 3.2, on every headline metric): the family figure is "at parity"
    return {"until": "target", "target": _m(3.1), "reached": reached, "stopped": rows[-1],
            "probe_steps": 3, "probes": rows}


def lm_run(*, grown_loss: float, reached: bool, probes: list[float]) -> RunSummary:
    """Member 1 (init, trained further for 2 GFLOPs) and member 2 (stops at a target; 5 GFLOPs); their
    baselines reach their final loss (lower is better) at their 2nd of 4 evaluations."""
    cfg = config_from_dict(LM_RAW)
    chain = [_row("lm/test-A", "chain", 2 * G, 3.5),
             _row("lm/test-B", "chain", 5 * G, grown_loss, epochs=1.5, stopping=_stopping(reached, probes))]
    individual = [_row("lm/test-A", "individual", 8 * G, 3.4, history=((2 * G, 3.6), (4 * G, 3.4), (6 * G, 3.45),
                                                                         (8 * G, 3.4))),
                  _row("lm/test-B", "individual", 20 * G, 3.2, history=((5 * G, 3.5), (10 * G, 3.2),
                                                                          (15 * G, 3.1), (20 * G, 3.2)))]
    chain[1].cumulative_flops = 7 * G
    return RunSummary(name="lm-guard", run_dir="r", chain=chain, individual=individual, cfg=cfg)


def test_parity_counts_a_baseline_at_its_first_evaluation_at_final_quality() -> None:
    """Baseline costs to first reach their own final loss: 4 and 10 GFLOPs (not their 8 and 20 GFLOPs ends, nor
    the 2 and 5 GFLOPs a higher-is-better reading gives); the chain spent 2 + 5: parity 14 / 7 = 2."""
    family = summarise([lm_run(grown_loss=3.0, reached=True, probes=[3.3, 3.05])])["family"]
    assert family["parity"]["reached_all"]
    assert family["parity"]["acceleration_flops"]["mean"] == pytest.approx(14 / 7)
    assert family["acceleration_flops"]["mean"] == pytest.approx(28 / 7)


def test_two_runs_are_reported_as_mean_and_sample_std() -> None:
    """Run 2's grown member costs 9 GFLOPs instead of 5: accelerations 28/7 and 28/11, mean ± sample std (n − 1);
    a single run has std 0 and prints no ±."""
    import statistics

    one, two = (lm_run(grown_loss=3.0, reached=True, probes=[3.3, 3.05]) for _ in range(2))
    two.chain[1].flops = 9 * G
    family = summarise([one, two])["family"]
    assert family["acceleration_flops"] == {"mean": pytest.approx((4 + 28 / 11) / 2),
                                            "std": pytest.approx(statistics.stdev([4, 28 / 11])), "n": 2}
    assert f"{(4 + 28 / 11) / 2:.2f} ± {statistics.stdev([4, 28 / 11]):.2f}×" in format_markdown(summarise([one, two]))
    single = summarise([one])
    assert single["family"]["acceleration_flops"] == {"mean": 4.0, "std": 0.0, "n": 1}
    assert "- family acceleration (FLOPs): 4.00×" in format_markdown(single)


def test_report_acceleration_counting_member_1_trained_further() -> None:
    """Member 1 continued for 2 GFLOPs from its init: counting its training from scratch (its baseline's 8 GFLOPs)
    too, the chain cost is 7 + 8, not 7 − 2 + 8."""
    summary = summarise([lm_run(grown_loss=3.0, reached=True, probes=[3.3, 3.05])])
    assert summary["family"]["acceleration_flops_counting_init"]["mean"] == pytest.approx(28 / 15)
    assert f"the family acceleration (FLOPs) is {28 / 15:.2f}×" in format_markdown(summary)


def test_closing_line_for_a_lower_is_better_metric_that_reaches_its_target() -> None:
    """Member 2's loss 3.0 against its baseline's 3.2: Δ −0.200 is better (lower), so it reaches its baseline."""
    summary = summarise([lm_run(grown_loss=3.0, reached=True, probes=[3.3, 3.05])])
    line = closing_line(summary)
    assert "lm/test-B -0.200 held-out loss" in line
    assert "1 of 1 reach their baseline on every metric" in line
    assert f"lm/test-B reached its target at 1.5 epochs ({human_flops(5 * G)}) — acceleration at parity 2.00×" in line


def test_closing_and_stopping_lines_for_a_lower_is_better_metric_that_misses() -> None:
    """Member 2's loss 3.3 against 3.2 is worse; its probes reached 3.5, 3.25, 3.4 on validation against a
    target of 3.1: the best is the lowest, 3.250."""
    summary = summarise([lm_run(grown_loss=3.3, reached=False, probes=[3.5, 3.25, 3.4])])
    line = closing_line(summary)
    assert "lm/test-B +0.100 held-out loss" in line and "0 of 1 reach their baseline on every metric" in line
    assert "lm/test-B missed its target" in line and "no acceleration at parity" in line
    md = format_markdown(summary)
    assert f"- lm/test-B: not reached by the cap (best on validation: held-out loss 3.250, held-out perplexity " \
           f"{math.exp(3.25):.3f}); stopped at 1.5 epochs" in md
    assert not summary["family"]["parity"]["reached_all"]


@pytest.mark.usefixtures("toy")
def test_load_run_rows_carry_growth_time_conditions_and_warn_of_a_damaged_final(tmp_path: Path, capsys) -> None:
    """A stage row's wall-clock is its training time plus the growth time in lineage.json (none without one); its
    conditions are the recorded ones; a final.pt whose size is not the recorded one is named on stderr."""
    import json

    from compt.paradigm import lower_is_better, metric_info
    from compt.runs import load_run

    cfg = config_from_dict(RAW | {"chain": [dict(m) for m in RAW["chain"][:2]]})
    train_run(cfg, tmp_path, progress=False)
    base = load_run(tmp_path).individual[1]
    assert base.cumulative_flops == base.flops > 0                    # a baseline is not a chain: no offset
    grown = tmp_path / "chain/02-toy_mlp-8"
    lineage = json.loads((grown / "lineage.json").read_text())
    (grown / "lineage.json").write_text(json.dumps({**lineage, "grow_s": 7.5}))
    result = json.loads((grown / "result.json").read_text())
    row = load_run(tmp_path).chain[1]
    assert row.wall_s == pytest.approx(result["wall_clock_s"] + 7.5)
    assert row.conditions == result["conditions"] and row.conditions
    assert capsys.readouterr().err == ""
    (grown / "lineage.json").write_text(json.dumps({k: v for k, v in lineage.items() if k != "grow_s"}))
    assert load_run(tmp_path).chain[1].wall_s == pytest.approx(result["wall_clock_s"])   # no growth time recorded
    with open(grown / "final.pt", "ab") as f:
        f.write(b"x")
    (grown / "lineage.json").unlink()
    assert load_run(tmp_path).chain[1].wall_s == pytest.approx(result["wall_clock_s"])
    assert "final.pt has" in capsys.readouterr().err
    assert metric_info("no-such-metric").label == "no-such-metric" and not lower_is_better("no-such-metric")
    assert lower_is_better("val_mse") and lower_is_better("val_loss") and not lower_is_better("zeroshot_top1")


def test_parity_needs_every_grown_member_to_reach_its_target() -> None:
    """Three members: member 2 reaches its target, member 3 does not — no acceleration at parity."""
    run = lm_run(grown_loss=3.0, reached=True, probes=[3.3, 3.05])
    run.cfg = config_from_dict(LM_RAW | {"chain": [*LM_RAW["chain"], {"model": "lm/test-C", "epochs": 2,
                                                                      "target": {"val_loss": 3.1}}]})
    run.chain.append(_row("lm/test-C", "chain", 6 * G, 3.2, stopping=_stopping(False, [3.4, 3.3])))
    run.individual.append(_row("lm/test-C", "individual", 30 * G, 3.1, history=((15 * G, 3.3), (30 * G, 3.1))))
    summary = summarise([run])
    assert not summary["family"]["parity"]["reached_all"]
    assert "- family acceleration at parity: not defined — a member did not reach its target by the cap" in \
        format_markdown(summary)
    assert "lm/test-B reached its target" in closing_line(summary) and "lm/test-C missed its target" in \
        closing_line(summary)


def test_closing_line_counts_a_tie_as_reaching_and_reads_members_with_some_deltas() -> None:
    """Member 2 ties its baseline's loss (Δ 0: reached) and recorded no perplexity (only the loss is compared)."""
    run = lm_run(grown_loss=3.2, reached=True, probes=[3.3, 3.05])
    del run.chain[1].metrics["val_ppl"]
    line = closing_line(summarise([run]))
    assert "lm/test-B +0.000 held-out loss —" in line and "1 of 1 reach their baseline on every metric" in line
