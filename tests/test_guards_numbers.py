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
from compt.train.stopping import probe_steps
from tests.test_paradigm import RAW, toy  # noqa: F401  (the toy paradigm's fixture)


# ----------------------------------------------------------------------------------------------- stopping
def test_a_probe_exactly_at_the_end_of_warmup_is_taken() -> None:
    # 4 steps per epoch, probes every 2 epochs at 8, 16, 24 (the cap's cooldown starts at 32 − round(0.2·24) = 27)
    assert probe_steps(total=32, warmup=8, fraction=0.2, every_epochs=2, samples=64, batch=16) == (8, 16, 24)
    assert probe_steps(total=32, warmup=9, fraction=0.2, every_epochs=2, samples=64, batch=16) == (16, 24)
    assert probe_steps(total=32, warmup=0, fraction=0.2, every_epochs=0.25, samples=64, batch=16)[:2] == (1, 2)


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
    return {"until": "target", "target": {"val_loss": 3.1}, "reached": reached, "stopped": rows[-1],
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
    assert "- lm/test-B: not reached by the cap (best on validation: held-out loss 3.250); stopped at 1.5 epochs" in md
    assert summary["family"]["parity"] == {"reached_all": False}
