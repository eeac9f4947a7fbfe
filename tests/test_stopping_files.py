"""Training until a target on data read from files (`compt.train.stopping` with `compt.clip.data.carve`): a CSV
run carves its validation split, targets only what the CSV measures (retrieval), says so in one line, resumes
exactly from inside a probe and records the carving in its stages' settings; a language model carves its
validation windows out of training or reads ``data.val_path``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import csv_of_pngs, csv_stopping_run, kill_in_probe, untimed

from compt.chain import fingerprint, plan_stages, stage_changes, train_run
from compt.checkpoint import load_checkpoint
from compt.config import RunConfig, config_from_dict, validate
from compt.errors import UserError


def csv_cfg(path: Path, member: dict[str, Any], **run: Any) -> RunConfig:
    cfg = config_from_dict(csv_stopping_run(path, member, **run))
    validate(cfg)
    return cfg


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return csv_of_pngs(tmp_path_factory.mktemp("csv"))


def test_until_baseline_on_a_csv_targets_the_retrieval_it_measures(csv_path: Path, tmp_path: Path, capsys) -> None:
    cfg = csv_cfg(csv_path, {"until": "baseline", "probe_every": 1.0}, baselines=True)
    results = train_run(cfg, tmp_path, progress=False)
    base = json.loads((tmp_path / "baselines/test_B/result.json").read_text())
    assert {k for k in base["validation"] if "/" not in k} == {"retrieval_r1"}   # no zero-shot classes in a CSV
    stop = results["chain-2"]["stopping"]
    assert stop["target"] == {"retrieval_r1": base["validation"]["retrieval_r1"]}
    for d in ("chain/01-test_A", "baselines/test_B", "chain/02-test_B"):   # 60 − 8 held out − 8 validation
        lineage = json.loads((tmp_path / d / "lineage.json").read_text())
        assert lineage["spec"]["samples"] == 44 and lineage["fingerprint"]["data"]["validation"] == "carved"
    err = capsys.readouterr().err
    assert err.count("compt: validation split (until/target): 8 samples carved from csv data") == 1, err


@pytest.mark.parametrize(("kind", "target", "measures"), [("csv", "zeroshot_top1", "retrieval_r1"),
                                                          ("folder", "retrieval_r1", "zeroshot_top1")])
def test_a_target_the_data_cannot_measure_is_one_line(tmp_path: Path, kind: str, target: str, measures: str,
                                                      capsys) -> None:
    from compt.cli import main

    raw = csv_stopping_run(tmp_path / "data.csv", {"target": {target: 10.0}})
    raw["data"].update(kind=kind, path=str(tmp_path))
    with pytest.raises(UserError, match=rf"chain member 2 \(test/B\): target {target} cannot be measured on data "
                                        rf"kind '{kind}' \(its validation split measures {measures}\)"):
        validate(config_from_dict(raw))
    config = tmp_path / "run.toml"
    config.write_text(f'name = "x"\n[data]\nkind = "{kind}"\npath = "{tmp_path}"\n[[chain]]\nmodel = "test/A"\n'
                      f'epochs = 1\n[[chain]]\nmodel = "test/B"\nepochs = 1\ntarget = {{ {target} = 10.0 }}\n')
    assert main(["train", str(config), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "cannot be measured" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_csv_stage_killed_inside_a_probe_resumes_to_the_same_result(csv_path: Path, tmp_path: Path,
                                                                       monkeypatch) -> None:

    cfg = csv_cfg(csv_path, {"target": {"retrieval_r1": 100.0}, "probe_every": 1.0})   # every probe misses
    reference = train_run(cfg, tmp_path / "ref", progress=False)["chain-2"]
    assert [p["step"] for p in reference["stopping"]["probes"]] == [6, 11, 17]   # 5.5 steps an epoch, cap 17
    built = []
    kill_in_probe(monkeypatch, 11)
    with pytest.raises(RuntimeError, match="killed in the probe"):
        train_run(cfg, tmp_path / "run", progress=False)
    monkeypatch.undo()
    from compt.clip import data as clip_data

    real_build = clip_data.build_pairs
    monkeypatch.setattr(clip_data, "build_pairs", lambda *a, **k: built.append(k["source"]) or real_build(*a, **k))
    resumed = train_run(cfg, tmp_path / "run", progress=False)["chain-2"]
    assert untimed(resumed["stopping"]) == untimed(reference["stopping"]) and resumed["metrics"] == reference["metrics"]
    a, b = (load_checkpoint(d / "chain/02-test_B/final.pt").state_dict for d in (tmp_path / "ref", tmp_path / "run"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert built.count(f"{csv_path} (validation)") == 1   # the validation suite is decoded once per run


def test_carving_is_part_of_every_stages_settings(csv_path: Path) -> None:
    plain = csv_cfg(csv_path, {})
    stopping = csv_cfg(csv_path, {"target": {"retrieval_r1": 10.0}})
    for stage in plan_stages(plain, False):   # member 1 trained on the whole split cannot stand for a carved one
        old = json.loads(json.dumps(fingerprint(plain, stage), default=str))
        assert "data.validation: None -> 'carved'" in stage_changes(old, stopping, stage)
    raw = csv_stopping_run(csv_path, {"target": {"retrieval_r1": 10.0}})
    raw["data"]["val_path"] = str(csv_path)   # a validation set of its own: the training data do not change
    own = config_from_dict(raw)
    stage = plan_stages(own, False)[0]
    assert "validation" not in fingerprint(own, stage)["data"]
    # synthetic data validate on a scene stream of their own: a run that stops fingerprints as before
    synthetic = config_from_dict({**csv_stopping_run(csv_path, {"target": {"retrieval_r1": 10.0}}), "data": {}})
    old = json.loads(json.dumps(fingerprint(config_from_dict({**csv_stopping_run(csv_path, {}), "data": {}}), stage),
                                default=str))
    assert stage_changes(old, synthetic, stage) == []


# ----------------------------------------------------------------------------------------------- language models
def lm_cfg(member: dict[str, Any], **data: Any) -> RunConfig:
    cfg = config_from_dict({"name": "lm", "data": {"kind": "text", "num_samples": 100_000, "eval_samples": 8, **data},
                            "train": {"batch_size": 8, "loader_workers": 0},
                            "chain": [{"model": "lm/test-A", "epochs": 1}, {"model": "lm/test-B", "epochs": 2,
                                                                            **member}]})
    validate(cfg)
    return cfg


def test_a_language_model_carves_its_validation_windows_out_of_training(tmp_path: Path) -> None:
    from compt.lm.data import LMData
    from compt.lm.paradigm import LMParadigm

    cfg = lm_cfg({"target": {"val_loss": 3.0}}, val_samples=5)
    plain = LMData(lm_cfg({}), tmp_path)
    data = LMParadigm().open_data(cfg, tmp_path)
    train, held, _ = data._data()
    val = data.validation_split()
    assert len(val) == 5 and val.start + 5 * val.context + 1 == held.start   # just before the held-out split
    assert len(train) * train.context + 1 <= val.start                        # after the last training window
    everything = plain._data()[0]   # without a validation split training runs up to the held-out split
    assert len(everything) * everything.context + 1 > val.start and len(train) == (val.start - 1) // train.context


def test_a_language_model_reads_its_own_validation_text(tmp_path: Path) -> None:
    from compt.lm.paradigm import LMParadigm

    text = "".join(f"line {i}: the quick brown fox.\n" for i in range(200))
    (tmp_path / "val.txt").write_text(text)
    cfg = lm_cfg({"target": {"val_loss": 3.0}}, val_path=str(tmp_path / "val.txt"), val_samples=3)
    data = LMParadigm().open_data(cfg, tmp_path / "run")
    val = data.validation_split()
    ctx = val.context
    tokens = np.frombuffer(text.encode(), dtype=np.uint8).astype(np.int64)   # byte-level ids are the bytes
    assert len(val) == 3 and torch.equal(val[2][0], torch.from_numpy(np.append(tokens, 256)[-(ctx + 1):]))
    plain = LMParadigm().open_data(lm_cfg({}), tmp_path / "plain")
    assert len(data._data()[0]) == len(plain._data()[0])   # training keeps every window
