"""What a run checks before it trades on its inputs, and how it stops anywhere: member 1's `init` file is the one
the run started from (sha256), an unwritable `train.teacher_cache_dir` stops the run before any stage, and a stop
signal that lands while a stage starts (growth, ``init.pt``, the teacher-cache fill) marks the stage interrupted,
prints one line and resumes to an uninterrupted run's weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w
import torch
from helpers import assert_same_finals, crash_after_step

from compt import chain as chain_mod
from compt.chain import train_run
from compt.checkpoint import save_checkpoint
from compt.clip.models import create_model, get_model_config
from compt.config import config_from_dict
from compt.errors import Stopped, UserError

TRAIN = {"batch_size": 16, "warmup_steps": 1, "stage_warmup_steps": 1, "loader_workers": 0, "threads": 1}
RAW = {"name": "guards", "data": {"kind": "synthetic", "num_samples": 32, "eval_samples": 16, "probe_samples": 0},
       "train": TRAIN, "chain": [{"model": "test/A", "epochs": 1},
                                 {"model": "test/B", "epochs": 1, "growth": "preserve"}]}


def states(run_dir: Path) -> dict[str, str]:
    return {s["key"]: s["state"] for s in json.loads((run_dir / "run.json").read_text())["stages"]}


def init_file(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    return save_checkpoint(path, state_dict=create_model("test/A").state_dict(),
                           model_config=get_model_config("test/A"), lineage={})


def with_init(init: Path) -> dict:
    return {**RAW, "chain": [{**RAW["chain"][0], "init": str(init)}]}


# ----------------------------------------------------------------------------------------------- init sha256
def test_a_finished_stage_refuses_an_init_file_replaced_since(tmp_path: Path) -> None:
    init = init_file(tmp_path / "init.pt", seed=1)
    run_dir = tmp_path / "run"
    train_run(config_from_dict(with_init(init)), run_dir, progress=False)
    lineage = json.loads((run_dir / "chain/01-test_A/lineage.json").read_text())
    assert lineage["init_sha256"] == chain_mod.init_digest(init)
    train_run(config_from_dict(with_init(init)), run_dir, progress=False)    # unchanged: accepted
    init_file(init, seed=2)                                                  # replaced: same path, other weights
    with pytest.raises(UserError, match=f"init {init} has changed since stage chain-1 \\(test/A\\) started from "
                                        f"it .* --from-stage chain-1$"):
        train_run(config_from_dict(with_init(init)), run_dir, progress=False)
    train_run(config_from_dict(with_init(init)), run_dir, from_stage="chain-1", progress=False)
    assert json.loads((run_dir / "chain/01-test_A/lineage.json").read_text())["init_sha256"] != \
        lineage["init_sha256"]


def test_an_interrupted_stage_refuses_an_init_file_replaced_since(tmp_path: Path, monkeypatch) -> None:
    init = init_file(tmp_path / "init.pt", seed=1)
    raw = with_init(init)
    raw["chain"][0]["epochs"] = 2
    crash_after_step(monkeypatch, "test/A", 2)   # the end of epoch 1 of 2: checkpointed, then killed
    with pytest.raises(RuntimeError, match="killed"):
        train_run(config_from_dict(raw), tmp_path / "run", progress=False)
    monkeypatch.undo()
    assert (tmp_path / "run/chain/01-test_A/last.pt").is_file()
    init_file(init, seed=2)
    with pytest.raises(UserError, match=f"init {init} has changed since stage chain-1"):
        train_run(config_from_dict(raw), tmp_path / "run", progress=False)


def test_the_digest_of_an_init_folder_covers_every_file(tmp_path: Path) -> None:
    folder = tmp_path / "hf"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "sub" / "model.safetensors").write_bytes(b"weights")
    before = chain_mod.init_digest(folder)
    (folder / "sub" / "model.safetensors").write_bytes(b"weightz")
    assert chain_mod.init_digest(folder) != before


# ----------------------------------------------------------------------------------------------- teacher cache dir
def test_an_unwritable_teacher_cache_dir_stops_the_run_before_any_stage(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    raw = {**RAW, "train": {**TRAIN, "teacher_cache_dir": str(blocker / "cache"), "teacher_cache_mem_gb": 0.0}}
    with pytest.raises(UserError, match=f"train.teacher_cache_dir {blocker / 'cache'} cannot be written "
                                        f"\\(Not a directory\\)"):
        train_run(config_from_dict(raw), tmp_path / "run", progress=False)
    assert not (tmp_path / "run/chain").exists()   # no stage started, member 1 included


# ----------------------------------------------------------------------------------------------- stop signals
@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("reference")
    train_run(config_from_dict(RAW), run_dir, progress=False)
    return run_dir


@pytest.fixture
def fatal_sigterm():
    """SIGTERM raises RuntimeError unless compt installs its own handler (instead of killing the test process, as
    the default handler would)."""
    def die(signum, frame):
        raise RuntimeError("SIGTERM reached the default handler")

    old = signal.signal(signal.SIGTERM, die)
    yield
    signal.signal(signal.SIGTERM, old)


def _signal_first(monkeypatch, target, name: str) -> None:
    real = getattr(target, name)

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, signalled)


@pytest.mark.parametrize("moment", ["growth", "init.pt", "teacher-cache fill"])
@pytest.mark.usefixtures("fatal_sigterm")
def test_a_stop_signal_as_a_stage_starts_marks_it_interrupted_and_resumes(moment: str, reference: Path,
                                                                          tmp_path: Path, monkeypatch) -> None:
    from compt.clip import teacher_cache
    from compt.clip.paradigm import PARADIGM

    target, name = {"growth": (PARADIGM, "grow"), "init.pt": (chain_mod, "save_checkpoint"),
                    "teacher-cache fill": (teacher_cache, "fill_teacher_cache")}[moment]
    _signal_first(monkeypatch, target, name)
    run_dir = tmp_path / "run"
    with pytest.raises(Stopped, match="^stopped by SIGTERM; nothing finished is lost — run the same command again"):
        train_run(config_from_dict(RAW), run_dir, progress=False)
    assert states(run_dir) == {"chain-1": "done", "chain-2": "interrupted"}
    assert (run_dir / "chain/02-test_B/init.pt").is_file() == (moment == "teacher-cache fill")
    assert not list(run_dir.rglob("*.tmp"))
    monkeypatch.undo()
    train_run(config_from_dict(RAW), run_dir, progress=False)
    assert states(run_dir) == {"chain-1": "done", "chain-2": "done"}
    assert_same_finals(run_dir, reference)


def test_sigterm_to_the_process_group_as_a_stage_starts_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text(tomli_w.dumps(RAW))
    script = ("import os, signal, sys\nfrom compt import chain\nreal = chain.grow_into\n"
              "def grow(*a, **k):\n    os.killpg(os.getpgrp(), signal.SIGTERM)\n    return real(*a, **k)\n"
              "chain.grow_into = grow\nfrom compt.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", script, "train", str(config), "--run-dir", str(tmp_path / "run"),
                           "--no-progress"], env=env, capture_output=True, text=True, timeout=300,
                          start_new_session=True)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == ("compt train: error: stopped by SIGTERM; nothing finished is "
                                                    "lost — run the same command again to resume")
    assert "Traceback" not in proc.stderr
    assert states(tmp_path / "run") == {"chain-1": "done", "chain-2": "interrupted"}
