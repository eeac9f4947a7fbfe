"""The warmup–stable–decay schedule (`compt.train.optim.wsd_lr_at`): values by hand, resolution in the stage
spec, exact resume of a WSD stage, validation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from helpers import assert_same_finals, crash_after_step

from compt.chain import plan_stages, stage_spec, train_run
from compt.checkpoint import load_checkpoint
from compt.config import config_from_dict, validate
from compt.errors import UserError
from compt.train.optim import schedule_lr_at, stage_lr_at, wsd_lr_at

KW = {"base_lr": 1.0, "min_lr": 0.0, "warmup": 2, "total": 12}


def test_wsd_values_by_hand() -> None:
    lin = [wsd_lr_at(s, cooldown_fraction=0.4, **KW) for s in range(12)]
    # 10 post-warmup steps, cooldown C = 4 from S = 8: t = 1/4 … 1 at steps 8 … 11
    assert lin == pytest.approx([0.5, 1.0, 1, 1, 1, 1, 1, 1, 0.75, 0.5, 0.25, 0.0])
    sq = [wsd_lr_at(s, cooldown_fraction=0.4, shape="sqrt", **KW) for s in range(8, 12)]
    assert sq == pytest.approx([1 - math.sqrt(t) for t in (0.25, 0.5, 0.75, 1.0)])
    assert wsd_lr_at(11, base_lr=1e-3, min_lr=1e-5, warmup=2, total=12, cooldown_fraction=0.4) == pytest.approx(1e-5)
    cosine = [schedule_lr_at(s, schedule="cosine", decay_fraction=1.0, **KW) for s in range(12)]
    assert cosine == [stage_lr_at(s, **KW) for s in range(12)]
    with pytest.raises(ValueError, match="unknown cooldown shape"):
        wsd_lr_at(5, cooldown_fraction=0.2, shape="cubic", **KW)


RAW = {"name": "wsd", "data": {"num_samples": 64, "eval_samples": 32, "probe_samples": 0},
       "train": {"batch_size": 16, "warmup_steps": 2, "stage_warmup_steps": 1, "lr": 2e-3, "min_lr": 1e-5,
                 "log_every_steps": 1},
       "chain": [{"model": "test/A", "epochs": 3, "schedule": "wsd", "cooldown_shape": "sqrt"},
                 {"model": "test/B", "epochs": 2, "schedule": "wsd", "decay_fraction": 0.5}]}


def test_the_spec_resolves_the_schedule_and_its_default_cooldown() -> None:
    cfg = config_from_dict(RAW)
    validate(cfg)
    a, b = (stage_spec(cfg, s, 64) for s in plan_stages(cfg, baselines=False))
    assert (a.schedule, a.cooldown_shape, a.decay_fraction) == ("wsd", "sqrt", 0.2)
    assert (b.schedule, b.cooldown_shape, b.decay_fraction) == ("wsd", "linear", 0.5)
    plain = config_from_dict({**RAW, "chain": [{"model": "test/A", "epochs": 1}]})
    assert stage_spec(plain, plan_stages(plain, False)[0], 64).schedule == "cosine"


def test_a_killed_wsd_stage_resumes_to_the_same_weights(tmp_path: Path, monkeypatch) -> None:
    cfg = config_from_dict(RAW)
    train_run(cfg, tmp_path / "ref", progress=False)
    logged = [r["lr"] for r in _train_records(tmp_path / "ref/chain/01-test_A")]
    assert logged[-1] == pytest.approx(1e-5) and max(logged) == pytest.approx(2e-3)
    crash_after_step(monkeypatch, "test/A", 10)
    with pytest.raises(RuntimeError, match="killed"):
        train_run(cfg, tmp_path / "run", progress=False)
    assert load_checkpoint(tmp_path / "run/chain/01-test_A/last.pt").train_state["progress"]["step"] == 8
    monkeypatch.undo()
    train_run(cfg, tmp_path / "run", progress=False)
    assert_same_finals(tmp_path / "run", tmp_path / "ref")


def _train_records(stage: Path) -> list[dict]:
    import json

    return [r for r in map(json.loads, (stage / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "train"]


@pytest.mark.parametrize(("member", "match"), [
    ({"schedule": "linear"}, "unknown lr schedule 'linear'"),
    ({"schedule": "wsd", "cooldown_shape": "cubic"}, "unknown cooldown shape 'cubic'"),
    ({"cooldown_shape": "sqrt"}, "cooldown_shape shapes a wsd schedule's cooldown"),
])
def test_bad_schedule_settings_are_one_line(member: dict, match: str) -> None:
    raw = {**RAW, "chain": [{"model": "test/A", "epochs": 1, **member}]}
    with pytest.raises(UserError, match=match):
        validate(config_from_dict(raw))
