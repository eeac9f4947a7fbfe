"""Issue 13: a locked run directory, validation before work starts, one-line errors for environment failures,
thread defaults recorded in the run, verified final checkpoints, RNG-independent initial weights."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import ToyPairs, final_weights, stage_kwargs

from compt.chain import train_run
from compt.checkpoint import save_checkpoint
from compt.cli import main
from compt.clip.models import create_model, get_model_config
from compt.config import RunConfig, config_from_dict, validate
from compt.errors import UserError, close_names
from compt.paradigm import paradigm_for_run
from compt.runlock import LOCK_NAME, acquire, release, run_lock
from compt.threads import resolve_threads
from compt.train import train_stage

ONE = {"name": "h", "data": {"kind": "synthetic", "num_samples": 32, "eval_samples": 16, "probe_samples": 16},
       "train": {"batch_size": 16, "warmup_steps": 1, "stage_warmup_steps": 1, "threads": 1},
       "chain": [{"model": "test/A", "epochs": 1}]}


def raw_with(**changes) -> dict:
    raw = json.loads(json.dumps(ONE))
    for key, value in changes.items():
        table, _, field = key.partition("__")
        raw[table][field] = value
    return raw


def toml_file(tmp_path: Path, raw: dict = ONE) -> Path:
    import tomli_w

    path = tmp_path / "run.toml"
    path.write_text(tomli_w.dumps(raw))
    return path


def run(run_dir: Path, raw: dict = ONE, **kw) -> dict:
    return train_run(config_from_dict(raw), run_dir, progress=False, **kw)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("finished")
    run(d)
    return d


# ----------------------------------------------------------------------------------------------- 1. lock
def test_a_second_run_on_a_locked_run_dir_is_refused(tmp_path: Path, capsys) -> None:
    d = tmp_path / "run"
    d.mkdir()
    with run_lock(d):
        with pytest.raises(UserError, match=r"run directory .* is in use by process \d+"):
            run(d)
        assert main(["train", str(toml_file(tmp_path)), "--run-dir", str(d), "--no-progress"]) == 2
        assert "is in use by process" in one_line_error(capsys)
    assert not (d / "chain").exists() and (d / LOCK_NAME).read_text() == ""  # a clean exit leaves no holder


def test_stale_lock_of_a_killed_process_is_taken_over_with_a_message(tmp_path: Path, capsys) -> None:
    code = "import os, sys; from pathlib import Path; from compt.runlock import acquire; " \
           "acquire(Path(sys.argv[1])); os.kill(os.getpid(), 9)"
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    holder = json.loads((tmp_path / LOCK_NAME).read_text())
    fd = acquire(tmp_path)
    try:
        err = capsys.readouterr().err
        assert f"taking over the lock of {tmp_path} left by process {holder['pid']}" in err
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    finally:
        release(fd)


# ----------------------------------------------------------------------------------------------- 2. threads
def test_thread_default_from_cpus_and_local_ranks_overridable(monkeypatch) -> None:
    monkeypatch.setattr("compt.threads.available_cpus", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert resolve_threads(0) == {"threads": 2, "source": "cpus // local ranks", "cpus": 8, "local_ranks": 4}
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert resolve_threads(0)["threads"] == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert resolve_threads(0)["threads"] == 3 and resolve_threads(5)["source"] == "train.threads"
    with pytest.raises(UserError, match="train.threads"):
        resolve_threads(-1)


def test_threads_are_set_and_recorded_in_the_run(finished: Path) -> None:
    assert torch.get_num_threads() == 1  # train.threads = 1 in ONE
    assert json.loads((finished / "run.json").read_text())["threads"]["threads"] == 1
    assert json.loads((finished / "chain/01-test_A/lineage.json").read_text())["threads"] == 1


def test_cli_makes_idle_openmp_threads_sleep() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = "import os, compt.cli; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60).stdout
    assert out.strip() == "PASSIVE"


def test_building_the_parser_and_listing_models_import_no_torch() -> None:
    code = "import compt.cli, sys; p = compt.cli.build_parser(); print('torch' in sys.modules); print(p.description)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    imported, description = out.stdout.splitlines()
    assert imported == "False" and "CLIP/SigLIP and language-model" in description
    code = "import compt.cli, sys; compt.cli.main(['models']); print(sorted({'torch', 'open_clip'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.splitlines()[-1] == "[]", out.stderr
    assert "paper/Swin-L" in out.stdout and "lm/cpu-1M" in out.stdout and "--family open_clip" in out.stdout


def test_grow_help_names_every_growth_operator(capsys) -> None:
    from compt.clip.growth import GROWTH_OPS

    with pytest.raises(SystemExit):
        main(["grow", "--help"])
    assert f"GROWTH_OPS): {', '.join(sorted(GROWTH_OPS))}" in " ".join(capsys.readouterr().out.split())


# ----------------------------------------------------------------------------------------------- 3. validation
@pytest.mark.parametrize("override, message", [
    ("data.eval_samples=0", "data.eval_samples must be at least 1"),
    ("train.lr=-1e-3", "train.lr must be above 0"),
    ("chain.0.distill_weight=-5", "distill_weight and warmup_steps must not be negative"),
    ("train.batch_size=64", "larger than the training set"),
    ("train.beta2=1.5", "train.beta2 must be in"),
    ('name=""', "name must be a non-empty folder name"),
    ('name="../x"', "name must be a non-empty folder name"),
])
def test_bad_settings_stop_train_before_the_run_dir_exists(override: str, message: str, tmp_path: Path,
                                                            capsys) -> None:
    d = tmp_path / "run"
    assert main(["train", str(toml_file(tmp_path)), override, "--run-dir", str(d), "--no-progress"]) == 2
    assert message in one_line_error(capsys) and not d.exists()


def test_plan_refuses_a_missing_data_path_and_a_negative_lr(tmp_path: Path, capsys) -> None:
    cfg = str(toml_file(tmp_path))
    assert main(["plan", cfg, 'data.kind="csv"']) == 2
    assert "needs data.path" in one_line_error(capsys)
    assert main(["plan", cfg, "train.lr=-1"]) == 2
    assert "train.lr must be above 0" in one_line_error(capsys)


@pytest.mark.parametrize("override, message", [
    ("chain.0.epochs=inf", "chain member 1 (test/A): epochs must be a finite number, got inf"),
    ("chain.0.epochs=nan", "chain member 1 (test/A): epochs must be a finite number, got nan"),
    ("chain.0.epochs=1e300", "(0 only with init: use the checkpoint as it is) and at most 1,000,000, got 1e+300"),
    ("chain.0.distill_weight=nan", "chain member 1 (test/A): distill_weight must be a finite number"),
    ("chain.0.lr=inf", "chain member 1 (test/A): lr must be a finite number"),
    ("chain.0.lr=1e-7", "chain member 1 (test/A): lr 1e-07 is below train.min_lr 3e-06"),
    ("chain.0.patch_dropout=1", "chain member 1 (test/A): patch_dropout must be in [0, 1), got 1.0"),
    ("train.lr=nan", "train.lr must be a finite number, got nan"),
    ("train.lr=inf", "train.lr must be a finite number, got inf"),
    ("train.min_lr=nan", "train.min_lr must be a finite number, got nan"),
    ("train.min_lr=0.01", "train.min_lr 0.01 is above train.lr 0.001"),
    ("train.threads=1025", "train.threads must be at least 0 and at most 1024, got 1025"),
    ("train.beta2=nan", "train.beta2 must be in [0, 1), got nan"),
    ("baseline_epochs=nan", "baseline_epochs must be positive (or 0: member 1's) and at most 1,000,000, got nan"),
    ("baseline_epochs=2e6", "baseline_epochs must be positive (or 0: member 1's) and at most 1,000,000"),
    ("data.max_bad_fraction=nan", "data.max_bad_fraction must be a finite number, got nan"),
])
def test_numbers_that_cannot_work_stop_plan_and_train_in_one_line(override: str, message: str, tmp_path: Path,
                                                                  capsys) -> None:
    d, cfg = tmp_path / "run", str(toml_file(tmp_path))
    assert main(["plan", cfg, override]) == 2
    assert message in one_line_error(capsys)
    assert main(["train", cfg, override, "--run-dir", str(d), "--no-progress"]) == 2
    assert message in one_line_error(capsys) and not d.exists()


@pytest.mark.parametrize("table", ["train", "chain"])
def test_every_float_setting_must_be_finite(table: str) -> None:
    """Each float field of TrainConfig / MemberConfig, also ones added later, refuses NaN and infinity."""
    import dataclasses
    import typing

    from compt.config import MemberConfig, TrainConfig

    cls = TrainConfig if table == "train" else MemberConfig
    floats = [f.name for f in dataclasses.fields(cls) if float in (t := typing.get_type_hints(cls)[f.name],
                                                                    *typing.get_args(t))]
    assert len(floats) >= 6
    for name, bad in ((n, b) for n in floats for b in (float("nan"), float("inf"))):
        raw = json.loads(json.dumps(ONE))
        (raw["train"] if table == "train" else raw["chain"][0])[name] = bad
        with pytest.raises(UserError, match=f"{name} must be (a finite number|in )"):
            validate(config_from_dict(raw))


@pytest.mark.parametrize("flags, message", [
    (["--eval-samples", "0"], "--eval-samples must be positive"),
    (["--eval-samples", "-5"], "--eval-samples must be positive"),
    (["--probe-samples", "-1"], "--probe-samples must be 0 or more"),
    (["--batch-size", "0"], "--batch-size must be positive"),
    (["--set", "eval_samples=0"], "data.eval_samples must be at least 1"),
])
def test_eval_refuses_bad_sizes_in_one_line(flags: list[str], message: str, tmp_path: Path, capsys) -> None:
    cfg = get_model_config("test/A")
    ckpt = save_checkpoint(tmp_path / "m.pt", state_dict=create_model(cfg).state_dict(), model_config=cfg)
    assert main(["eval", str(ckpt), *flags]) == 2
    assert message in one_line_error(capsys)


@pytest.mark.parametrize("device, gpus, message", [
    ("gpu0", 0, "--device 'gpu0' is not a device name: use cpu, cuda or cuda:N"),
    ("cuda", 0, "--device cuda: this machine has no usable CUDA GPU (torch.cuda.is_available() is False); use "
                "--device cpu"),
    ("cuda:3", 1, "--device cuda:3: this machine has 1 CUDA device(s), cuda:0 to cuda:0"),
    ("meta", 0, "compt evaluates on cpu, cuda[:N] or mps, not meta"),
])
@pytest.mark.parametrize("data", ["synthetic", "text"])
def test_eval_refuses_a_malformed_or_absent_device_in_one_line(device: str, gpus: int, message: str, data: str,
                                                               tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    cfg = get_model_config("test/A")
    ckpt = save_checkpoint(tmp_path / "m.pt", state_dict=create_model(cfg).state_dict(), model_config=cfg)
    assert main(["eval", str(ckpt), "--data", data, "--device", device]) == 2
    assert message in one_line_error(capsys)


def test_eval_of_a_run_directory_says_what_to_pass(finished: Path, tmp_path: Path, capsys) -> None:
    for data in ("synthetic", "text"):
        assert main(["eval", str(finished), "--data", data]) == 2
        err = one_line_error(capsys)
        assert f"{finished} is a folder, not a checkpoint: pass a checkpoint file such as " \
               f"{finished / 'chain/01-test_A/final.pt'}, or (CLIP runs) --benchmark DATASET" in err
        assert "not found" not in err
    assert main(["eval", str(tmp_path)]) == 2
    assert f"such as {tmp_path / 'chain/01-…/final.pt'}" in one_line_error(capsys)


def test_batch_larger_than_the_data_is_refused_before_training(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="larger than the training set"):
        train_stage(**stage_kwargs(tmp_path, dataset=ToyPairs(8)))
    assert not (tmp_path / "last.pt").exists()


class _FailingEvaluation:
    """A paradigm whose held-out evaluation cannot be built for the models in `bad` (a data problem, e.g. an
    evaluation split that cannot be made); everything else is the real paradigm's."""

    def __init__(self, paradigm, bad: set[str]) -> None:
        self.paradigm, self.bad = paradigm, bad

    def __getattr__(self, name: str):
        return getattr(self.paradigm, name)

    def open_data(self, cfg, run_dir):
        data, bad = self.paradigm.open_data(cfg, run_dir), self.bad

        class Data:
            def __getattr__(self, name: str):
                return getattr(data, name)

            def evaluator(self, model_cfg):
                if model_cfg.name in bad:
                    raise UserError(f"no evaluation split for {model_cfg.name}")
                return data.evaluator(model_cfg)

        return Data()


def test_the_first_unfinished_stages_data_is_built_before_any_stage_trains(tmp_path: Path, monkeypatch) -> None:
    """README/docs/cluster.md: settings and data are checked before any stage trains — for a resumed run the
    first unfinished stage's, before anything of it (the grown init.pt, its lineage) is written."""
    raw = {**ONE, "chain": [*ONE["chain"], {"model": "test/B", "epochs": 1, "growth": "preserve"}]}
    def failing(bad: set[str]) -> property:   # the run's held paradigm (RunConfig.paradigm), failing for `bad`
        return property(lambda cfg: _FailingEvaluation(paradigm_for_run(cfg), bad))

    real = RunConfig.__dict__["paradigm"]
    monkeypatch.setattr(RunConfig, "paradigm", failing({"test/A"}))
    with pytest.raises(UserError, match="no evaluation split for test/A"):
        run(tmp_path / "fresh", raw)
    assert not list((tmp_path / "fresh").glob("chain/*/*")), "a stage started although its data could not be built"
    monkeypatch.setattr(RunConfig, "paradigm", real)
    run(tmp_path / "resumed", raw)
    second = tmp_path / "resumed" / "chain" / "02-test_B"
    shutil.rmtree(second)   # member 2 unfinished, member 1 done
    monkeypatch.setattr(RunConfig, "paradigm", failing({"test/B"}))
    with pytest.raises(UserError, match="no evaluation split for test/B"):
        run(tmp_path / "resumed", raw)
    assert not second.exists(), "member 2 was grown although its data could not be built"
    states = {s["key"]: s["state"] for s in json.loads((tmp_path / "resumed" / "run.json").read_text())["stages"]}
    assert states["chain-1"] == "done" and states["chain-2"] != "running"


def test_a_failing_final_evaluation_loses_no_training(tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    train_stage(**stage_kwargs(ref), evaluate=lambda m: {"s": m.logit_scale.item()})

    def broken(model):
        raise UserError("evaluation failed")

    with pytest.raises(UserError, match="evaluation failed"):
        train_stage(**stage_kwargs(tmp_path / "b"), evaluate=broken)
    last = torch.load(tmp_path / "b/last.pt", weights_only=True)["train_state"]
    assert last["progress"]["step"] == last["total_steps"] == 8  # every step is saved

    def no_training(step: int) -> None:
        raise AssertionError("a finished step was retrained")

    result = train_stage(**stage_kwargs(tmp_path / "b"), evaluate=lambda m: {"s": m.logit_scale.item()},
                         on_step=no_training)
    assert [h["step"] for h in result.history] == [8]
    wa, wb = final_weights(ref), final_weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_train_without_arguments_names_only_the_config(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["train"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.splitlines()[-1].endswith("required: config")


@pytest.mark.parametrize("typo, first", [("test/b", "test/B"), ("tiny/ViT-s", "tiny/ViT-S")])
def test_near_miss_model_names_rank_the_case_insensitive_match_first(typo: str, first: str) -> None:
    from compt.clip.models import list_models

    assert close_names(typo, list_models())[0] == first
    with pytest.raises(UserError, match=f"did you mean '{first}'"):
        get_model_config(typo)
