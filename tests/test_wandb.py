"""Optional Weights & Biases logging (``train.report_to``), in offline mode: one W&B run per stage, grouped by chain."""

from pathlib import Path

import pytest

from compt.chain import train_run
from compt.config import config_from_dict, load_config
from compt.errors import UserError

RAW = {"name": "wb", "data": {"kind": "synthetic", "num_samples": 32, "eval_samples": 16},
       "train": {"batch_size": 16, "warmup_steps": 1, "stage_warmup_steps": 1, "report_to": ["tensorboard", "wandb"]},
       "chain": [{"model": "test/A", "epochs": 1}, {"model": "test/B", "epochs": 1}]}


@pytest.fixture
def wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    calls = []
    real = wandb.init

    def spy(**kw):
        calls.append(kw)
        return real(**kw)

    monkeypatch.setattr(wandb, "init", spy)
    return calls


def test_each_stage_is_one_offline_wandb_run_grouped_by_chain(tmp_path: Path, wandb_offline: list) -> None:
    run_dir = tmp_path / "wandb-chain-7f3"
    train_run(config_from_dict(RAW), run_dir, progress=False)
    assert [(c["group"], c["name"], c["project"]) for c in wandb_offline] == [
        ("wandb-chain-7f3", "chain-1 test/A", "compt"), ("wandb-chain-7f3", "chain-2 test/B", "compt")]
    for stage in ("chain/01-test_A", "chain/02-test_B"):
        d = run_dir / stage
        run_id = (d / "wandb/run_id").read_text().strip()
        logs = list(d.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb"))
        assert len(logs) == 1, list(d.rglob("*"))
        data = logs[0].read_bytes()
        assert b"train/loss" in data and b"eval/retrieval_r1" in data and b"wandb-chain-7f3" in data
        assert any((d / "tb").iterdir())                          # TensorBoard still written beside it
    assert wandb_offline[0]["config"]["train"]["report_to"] == ("tensorboard", "wandb")


def test_a_resumed_stage_continues_its_wandb_run(tmp_path: Path, wandb_offline: list) -> None:
    from compt.train.wandb_log import start_wandb

    ids = []
    for fresh in (True, False, True):
        run = start_wandb(tmp_path, fresh=fresh, project="compt", group="g", name="n", config={})
        ids.append(run.id)
        run.finish()
    assert ids[0] == ids[1] != ids[2]


def test_report_to_is_checked(tmp_path: Path) -> None:
    cfg = tmp_path / "r.toml"
    cfg.write_text('[[chain]]\nmodel = "test/A"\nepochs = 1\n')
    assert load_config(cfg).train.report_to == ("tensorboard",)
    assert load_config(cfg, ["train.report_to=[]"]).train.report_to == ()
    with pytest.raises(UserError, match="unknown train.report_to entry 'mlflow'"):
        load_config(cfg, ["train.report_to=['tensorboard', 'mlflow']"])
    with pytest.raises(UserError, match="expected a list"):
        load_config(cfg, ["train.report_to=3"])
