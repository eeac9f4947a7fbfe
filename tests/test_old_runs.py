"""Run directories written before the paradigm core (compt at commit fdb5b53, `tests/data/runs-fdb5b53`, made
by killing a CLIP and a language-model chain in their second stage) are still accepted and resumed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import StepLog, assert_resumed

from compt.chain import check_or_reset, plan_stages, stage_changes, train_run
from compt.checkpoint import load_checkpoint
from compt.config import config_from_dict, read_run_config

FIXTURE = Path(__file__).resolve().parent / "data" / "runs-fdb5b53"


@pytest.fixture
def old_runs(tmp_path: Path, monkeypatch) -> Path:
    copy = tmp_path / "runs"
    shutil.copytree(FIXTURE, copy)
    monkeypatch.chdir(copy)   # the LM run names its corpus relative to where it was started
    return copy


def test_an_old_clip_run_keeps_its_finished_stages(old_runs: Path) -> None:
    """The same settings under this version fingerprint as they did then: no stage counts as changed."""
    cfg = config_from_dict(json.loads((old_runs / "old-clip.json").read_text()))
    assert [m.model for m in read_run_config(old_runs / "old-clip").chain] == [m.model for m in cfg.chain]
    for stage in plan_stages(cfg, cfg.baselines):
        lineage = old_runs / "old-clip" / stage.directory / "lineage.json"
        if lineage.is_file():
            assert stage_changes(json.loads(lineage.read_text())["fingerprint"], cfg, stage) == [], stage.key
    check_or_reset(old_runs / "old-clip", cfg, plan_stages(cfg, cfg.baselines), None)   # does not refuse


def test_an_old_lm_run_resumes_to_the_old_uninterrupted_weights(old_runs: Path, monkeypatch, capsys) -> None:
    cfg = config_from_dict(json.loads((old_runs / "old-lm.json").read_text()))
    checkpointed = load_checkpoint(old_runs / "old-lm/chain/02-lm_test-B/last.pt")   # an old-format LM file
    assert checkpointed.paradigm == "lm" and checkpointed.model_config.name == "lm/test-B"
    step = checkpointed.train_state["progress"]["step"]
    log = StepLog(monkeypatch)
    train_run(cfg, old_runs / "old-lm", progress=False)
    assert_resumed(log, "lm/test-B", step, checkpointed.train_state["total_steps"], capsys.readouterr().err)
    assert log.of("lm/test-A") == []                                   # finished then, not trained again
    got = load_checkpoint(old_runs / "old-lm/chain/02-lm_test-B/final.pt").state_dict
    want = load_checkpoint(old_runs / "old-lm-uninterrupted-final.pt").state_dict
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6, msg=k)
