"""Issue 13: a locked run directory, validation before work starts, one-line errors for environment failures,
thread defaults recorded in the run, verified final checkpoints, RNG-independent initial weights."""

from __future__ import annotations

import errno
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

from compt import chain as chain_mod
from compt.chain import settings_changes, train_run
from compt.checkpoint import load_checkpoint, save_checkpoint
from compt.cli import main
from compt.clip.models import create_model, get_model_config
from compt.config import config_from_dict, load_config, validate
from compt.errors import UserError, close_names, one_line
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
    ("chain.0.distill_temperature=0", "distill_temperature must be positive, got 0.0"),
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
    real = chain_mod.paradigm_for_run
    monkeypatch.setattr(chain_mod, "paradigm_for_run", lambda cfg: _FailingEvaluation(real(cfg), {"test/A"}))
    with pytest.raises(UserError, match="no evaluation split for test/A"):
        run(tmp_path / "fresh", raw)
    assert not list((tmp_path / "fresh").glob("chain/*/*")), "a stage started although its data could not be built"
    monkeypatch.setattr(chain_mod, "paradigm_for_run", real)
    run(tmp_path / "resumed", raw)
    second = tmp_path / "resumed" / "chain" / "02-test_B"
    shutil.rmtree(second)   # member 2 unfinished, member 1 done
    monkeypatch.setattr(chain_mod, "paradigm_for_run", lambda cfg: _FailingEvaluation(real(cfg), {"test/B"}))
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


# ----------------------------------------------------------------------------------------------- 4. bad data
def write_pngs(folder: Path, n: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (8, 8), ((37 * i) % 256, (91 * i) % 256, (53 * i) % 256)).save(folder / f"{i}.png")


def test_non_utf8_caption_is_a_skipped_counted_row(tmp_path: Path, caplog, capsys) -> None:
    from compt.clip.data import build_train_dataset
    from compt.config import DataConfig

    write_pngs(tmp_path, 120)
    rows = [f"{i}.png,caption {i}".encode() for i in range(120)]
    rows[7] = b"7.png,caf\xe9 latte"  # latin-1, not UTF-8
    (tmp_path / "a.csv").write_bytes(b"filepath,caption\n" + b"\n".join(rows) + b"\n")
    data = DataConfig(kind="csv", path=str(tmp_path / "a.csv"), eval_path=str(tmp_path / "a.csv"))
    with caplog.at_level("WARNING", logger="compt.clip.data"):
        assert len(build_train_dataset(data, get_model_config("test/A"))) == 119
    assert "1 of 120 samples" in caplog.text and "caption is not valid UTF-8" in caplog.text
    cfg = get_model_config("test/A")
    ckpt = save_checkpoint(tmp_path / "m.pt", state_dict=create_model(cfg).state_dict(), model_config=cfg)
    assert main(["eval", str(ckpt), "--data", "csv", "--data-path", str(tmp_path / "a.csv"),
                 "--eval-samples", "50", "--probe-samples", "0"]) == 0


def test_bad_data_limit_is_taken_over_the_whole_source_not_a_split(tmp_path: Path) -> None:
    from compt.clip.data import build_eval_suite, build_train_dataset
    from compt.clip.data.real import subset
    from compt.config import DataConfig

    n = 400                                          # 2 bad = 0.5 % of the source; both in the 40 held out
    held = sorted(subset(n, 40, 0, stream=1).tolist())
    write_pngs(tmp_path, n)
    (tmp_path / f"{held[0]}.png").unlink()                          # missing file (found when indexing)
    (tmp_path / f"{held[1]}.png").write_bytes(b"not an image")      # undecodable (found when decoding)
    (tmp_path / "a.csv").write_text("filepath,caption\n" + "".join(f"{i}.png,pic {i}\n" for i in range(n)))
    data = DataConfig(kind="csv", path=str(tmp_path / "a.csv"), eval_samples=40)
    cfg = get_model_config("test/A")
    suite = build_eval_suite(data, cfg)
    assert len(suite.retrieval.images) + len(build_train_dataset(data, cfg)) == n - 2


def test_bad_data_found_in_a_loader_worker_is_one_line(tmp_path: Path, capsys) -> None:
    write_pngs(tmp_path / "img", 60)
    for i in range(3):                               # 3 of 60 > 1 %, found only when decoding lazily
        (tmp_path / f"img/{i}.png").write_bytes(b"garbage")
    (tmp_path / "img/a.csv").write_text("filepath,caption\n" + "".join(f"{i}.png,pic {i}\n" for i in range(60)))
    raw = raw_with(data__kind="csv", data__path=str(tmp_path / "img/a.csv"), data__predecode_max=1,
                   data__eval_samples=8, train__loader_workers=1)
    assert main(["train", str(toml_file(tmp_path, raw)), "--run-dir", str(tmp_path / "run"), "--no-progress"]) == 2
    err = one_line_error(capsys)
    assert "more than data.max_bad_fraction" in err and "DataLoader worker" not in err


def test_one_line_keeps_the_innermost_user_error() -> None:
    wrapped = ("Caught UserError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
               '  File "x.py", line 1, in f\ncompt.errors.UserError: a.csv: 3 of 60 samples are bad\n')
    assert one_line(wrapped) == "a.csv: 3 of 60 samples are bad"


# ----------------------------------------------------------------------------------------------- 5. environment
def shutil_usage(total: int, used: int, free: int):
    import shutil

    return shutil._ntuple_diskusage(total, used, free)


def test_disk_full_while_saving_is_one_line_and_leaves_no_temp_file(tmp_path: Path, monkeypatch, capsys) -> None:
    import compt.checkpoint as ck

    def full_disk_save(obj, f, *a, **kw):
        f.write(b"PK\x03\x04partial")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 640 vs 512")

    monkeypatch.setattr(ck.torch, "save", full_disk_save)
    monkeypatch.setattr(ck.shutil, "disk_usage", lambda p: shutil_usage(100, 100, 0))
    d = tmp_path / "run"
    assert main(["train", str(toml_file(tmp_path)), "--run-dir", str(d), "--no-progress"]) == 2
    assert "no space left on device" in one_line_error(capsys)
    assert not list(d.rglob("*.tmp")) and not list(d.rglob(".*.tmp"))


def test_a_full_disk_is_named_even_when_the_failed_file_freed_its_space(tmp_path: Path, monkeypatch) -> None:
    """torch's zip writer fails with "file write failed"; once the partial file is removed the disk is not full
    any more, so the message must not depend on the free space measured afterwards."""
    import compt.checkpoint as ck

    def failing_save(obj, f, *a, **kw):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(ck.torch, "save", failing_save)
    monkeypatch.setattr(ck.shutil, "disk_usage", lambda p: shutil_usage(100, 10, 2**40))   # plenty, afterwards
    with pytest.raises(UserError, match="no space left on device"):
        ck.atomic_save({"x": 1}, tmp_path / "a.pt")
    assert not list(tmp_path.glob(".*.tmp"))


def test_disk_full_on_a_json_write_is_one_line_and_leaves_no_temp_file(tmp_path: Path, monkeypatch, capsys) -> None:
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(".run.json."):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    d = tmp_path / "run"
    assert main(["train", str(toml_file(tmp_path)), "--run-dir", str(d), "--no-progress"]) == 2
    assert "run.json: No space left on device — free some space" in one_line_error(capsys)
    assert not list(d.rglob("*.tmp"))


@pytest.mark.parametrize("command", ["train", "report", "grow"])
def test_read_only_filesystem_is_one_line(command: str, finished: Path, tmp_path: Path, monkeypatch,
                                          capsys) -> None:
    def read_only(*a, **kw):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "x"))

    monkeypatch.setattr(Path, "mkdir", read_only)
    args = {"train": ["train", str(toml_file(tmp_path)), "--run-dir", str(tmp_path / "r"), "--no-progress"],
            "report": ["report", str(finished), "--out", str(tmp_path / "rep")],
            "grow": ["grow", "--from", str(finished / "chain/01-test_A/final.pt"), "--to", "test/B", "--op",
                     "preserve", "--out", str(tmp_path / "g/child.pt")]}[command]
    assert main(args) == 2
    assert "Read-only file system — choose a writable folder" in one_line_error(capsys)


def test_malformed_model_config_and_blocked_pickle_are_named_as_such(tmp_path: Path, capsys) -> None:
    import argparse

    cfg = get_model_config("test/A")
    payload = torch.load(save_checkpoint(tmp_path / "m.pt", state_dict=create_model(cfg).state_dict(),
                                         model_config=cfg), weights_only=True)
    torch.save({**payload, "model_config": {"name": "test/A"}}, tmp_path / "bad.pt")
    assert main(["eval", str(tmp_path / "bad.pt")]) == 2
    assert "its model_config is malformed (KeyError" in one_line_error(capsys)
    torch.save({"state_dict": argparse.Namespace(x=1)}, tmp_path / "pickle.pt")  # an arbitrary Python object
    with pytest.raises(UserError, match=r"refusing to load .*argparse.Namespace, which safe loading"):
        load_checkpoint(tmp_path / "pickle.pt")
    torch.save({"state_dict": RunsCode()}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match=r"refusing to load .*getpid, which safe loading"):
        load_checkpoint(tmp_path / "evil.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint" * 100)
    with pytest.raises(UserError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "garbage.pt")


class RunsCode:
    """A pickle that calls a function when loaded unsafely (a harmless one here)."""

    def __reduce__(self):
        return (os.getpid, ())


# ----------------------------------------------------------------------------------------------- 6. smaller
def test_a_truncated_final_pt_is_detected_and_rebuilt(finished: Path, tmp_path: Path, capsys) -> None:
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(finished, d)
    final = d / "chain/01-test_A/final.pt"
    good = final_weights(final.parent)
    final.write_bytes(final.read_bytes()[:-100])
    assert main(["report", str(d)]) == 0
    assert "final.pt has" in capsys.readouterr().err
    run(d)
    assert capsys.readouterr().err.count("is not done — rebuilding it") == 1   # said once, not by runner and trainer
    assert all(torch.equal(good[k], v) for k, v in final_weights(final.parent).items())
    recorded = json.loads((final.parent / "result.json").read_text())["final_pt"]
    assert recorded["size"] == final.stat().st_size


def test_sigterm_marks_the_stage_interrupted_not_failed(tmp_path: Path, monkeypatch) -> None:
    import compt.train

    real = compt.train.train_stage
    monkeypatch.setattr(compt.train, "train_stage",
                        lambda *a, **kw: real(*a, **kw, on_step=lambda s: os.kill(os.getpid(), signal.SIGTERM)))
    with pytest.raises(UserError, match="stopped by SIGTERM"):
        run(tmp_path)
    assert json.loads((tmp_path / "run.json").read_text())["stages"][0]["state"] == "interrupted"


def test_workers_and_threads_may_change_on_resume(finished: Path, monkeypatch) -> None:
    monkeypatch.setattr("compt.train.train_stage", lambda *a, **kw: pytest.fail("retrained"))
    old = json.loads((finished / "chain/01-test_A/lineage.json").read_text())["fingerprint"]
    old = {**old, "data": {**old["data"], "workers": 0}}  # fingerprints written before this change hold it
    (finished / "chain/01-test_A/lineage.json").write_text(json.dumps({"fingerprint": old}))
    run(finished, raw_with(data__workers=2, train__loader_workers=1, train__threads=1))


def test_changed_settings_name_members_1_based() -> None:
    old = {"members": [{"epochs": 1}, {"epochs": 1}, {"epochs": 1}]}
    new = {"members": [{"epochs": 1}, {"epochs": 1}, {"epochs": 2}]}
    assert settings_changes(old, new) == ["member 3.epochs: 1 -> 2"]
    assert settings_changes({"members": [{"epochs": 1}]}, {"members": [{"epochs": 2}]}, first_member=3) == \
        ["member 3.epochs: 1 -> 2"]  # a baseline's fingerprint holds its own member only


def test_grow_refuses_to_overwrite_another_models_open_clip_config(finished: Path, tmp_path: Path, capsys) -> None:
    parent = str(finished / "chain/01-test_A/final.pt")
    grow = ["grow", "--from", parent, "--op", "preserve"]
    assert main([*grow, "--to", "test/B", "--out", str(tmp_path / "b.pt")]) == 0
    assert main([*grow, "--to", "test/B", "--out", str(tmp_path / "b2.pt"), "--seed", "1"]) == 0  # same model
    assert main([*grow, "--to", "test/C", "--out", str(tmp_path / "c.pt")]) == 2
    assert "already describes another model" in one_line_error(capsys)
    config = json.loads((tmp_path / "open_clip_config.json").read_text())["model_cfg"]
    assert config["embed_dim"] == get_model_config("test/B").embed_dim and not (tmp_path / "c.pt").exists()


def test_initial_weights_do_not_depend_on_what_the_process_drew_before(finished: Path, tmp_path: Path,
                                                                        monkeypatch) -> None:
    import compt.clip.data

    def drawing(real):
        def build(*a, **kw):
            torch.randn(1000)  # e.g. a data source or evaluation split drawn with the global RNG
            return real(*a, **kw)
        return build

    for name in ("build_train_dataset", "build_eval_suite"):
        monkeypatch.setattr(compt.clip.data, name, drawing(getattr(compt.clip.data, name)))
    run(tmp_path)
    wa, wb = final_weights(finished / "chain/01-test_A"), final_weights(tmp_path / "chain/01-test_A")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_from_stage_checks_everything_before_deleting_anything(tmp_path: Path) -> None:
    raw = raw_with(data__num_samples=32)
    raw.update(baselines=True, baseline_epochs=1,
               chain=[{"model": "test/A", "epochs": 1}, {"model": "test/B", "epochs": 0.5}])
    run(tmp_path, raw)
    changed = {**raw, "baseline_epochs": 2}  # baseline-2 is not rerun by --from-stage chain-2: refused
    with pytest.raises(UserError, match=r"stage baseline-2 \(test/B\) was run with other settings"):
        run(tmp_path, changed, from_stage="chain-2")
    assert (tmp_path / "chain/02-test_B/final.pt").is_file()  # nothing was deleted


def test_load_config_example_still_valid() -> None:
    cfg = load_config(Path(__file__).with_name("data") / "test-chain.toml")
    assert chain_mod.plan_stages(cfg, True)[0].key == "chain-1"


LOCK_SCRIPT = """
import sys
from pathlib import Path

from compt import distributed
from compt.errors import UserError
from compt.runlock import run_lock
from compt.threads import resolve_threads

info = distributed.init_distributed()
for run_dir in sys.argv[1:]:
    try:
        with run_lock(Path(run_dir)):
            distributed.barrier()  # every rank is inside the lock at once: they share it
            print(f"rank {info.rank} inside, {resolve_threads(0)['local_ranks']} local ranks", flush=True)
    except UserError as e:
        print(f"rank {info.rank} refused: {e}", flush=True)
distributed.shutdown()
"""


def test_torchrun_ranks_share_the_lock_and_are_refused_together(tmp_path: Path) -> None:
    script, free, held = tmp_path / "lock_job.py", tmp_path / "free", tmp_path / "held"
    script.write_text(LOCK_SCRIPT)
    free.mkdir()
    held.mkdir()
    cmd = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node", "2", str(script),
           str(free), str(held)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    fd = acquire(held)  # another job holds it: both ranks stop (rank 1 does not hang)
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env).stdout
    finally:
        release(fd)
    assert "rank 0 inside, 2 local ranks" in out and "rank 1 inside" in out
    assert "rank 0 refused: run directory" in out and "rank 1 refused: run directory" in out
