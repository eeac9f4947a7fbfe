"""What a cluster sends: SIGTERM to the whole process group (Slurm, `timeout`, `docker stop`, systemd), or a
terminal's Ctrl-C (SIGINT), checkpoints and marks the stage interrupted, for CLIP and LM alike, and the rerun
resumes to an uninterrupted run's weights; a SIGKILLed run restarts at once, although its loader workers may
outlive it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomli_w
import torch

from compt.chain import train_run
from compt.checkpoint import load_checkpoint
from compt.config import config_from_dict

TRAIN = {"batch_size": 16, "warmup_steps": 1, "stage_warmup_steps": 1, "ckpt_every_steps": 1, "log_every_steps": 1,
         "loader_workers": 1}
CLIP = {"name": "sig", "data": {"kind": "synthetic", "num_samples": 48, "eval_samples": 16, "probe_samples": 0},
        "train": TRAIN, "chain": [{"model": "test/A", "epochs": 1},
                                  {"model": "test/B", "epochs": 4, "growth": "preserve"}]}
TEXT = "".join(f"def h{i}(z):\n    return z + {i} * {i % 3}  # {i}\n" for i in range(300))


def lm_config(corpus: Path) -> dict:
    return {"name": "sig-lm", "data": {"kind": "text", "path": str(corpus), "num_samples": 48, "eval_samples": 8},
            "train": TRAIN, "chain": [{"model": "lm/test-A", "epochs": 1},
                                      {"model": "lm/test-B", "epochs": 4, "growth": "preserve"}]}


def command(config: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "compt", "train", str(config), "--run-dir", str(run_dir), "--no-progress"]


def environment() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


def wait_for_records(stage: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        log = stage / "metrics.jsonl"
        if log.is_file() and len(log.read_text().splitlines()) >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"{stage} never wrote {n} records (process state {proc.poll()})")


def final_states(run_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {p.parent.name: load_checkpoint(p).state_dict for p in sorted(run_dir.glob("chain/*/final.pt"))}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_text(TEXT)
    return path


@pytest.mark.parametrize(("paradigm", "sig"), [("clip", signal.SIGTERM), ("lm", signal.SIGTERM),
                                                ("clip", signal.SIGINT)],   # SIGINT: Ctrl-C in a terminal
                         ids=["clip-SIGTERM", "lm-SIGTERM", "clip-SIGINT"])
def test_a_stop_signal_to_the_process_group_checkpoints_and_resumes(paradigm: str, sig: signal.Signals,
                                                                     tmp_path: Path, corpus: Path) -> None:
    raw = CLIP if paradigm == "clip" else lm_config(corpus)
    train_run(config_from_dict(raw), tmp_path / "reference", progress=False)
    config = tmp_path / "run.toml"
    config.write_text(tomli_w.dumps(raw))
    run_dir = tmp_path / "run"
    second = next(iter(sorted((tmp_path / "reference").glob("chain/02-*")))).name
    proc = subprocess.Popen(command(config, run_dir), env=environment(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_for_records(run_dir / "chain" / second, 2, proc)
    os.killpg(proc.pid, sig)                     # the main process and its loader worker alike
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 2, err[-2000:]
    assert f"stopped by {sig.name} after step" in err and "checkpoint saved" in err, err[-2000:]
    assert "exited unexpectedly" not in err and "Traceback" not in err
    states = {s["key"]: s["state"] for s in json.loads((run_dir / "run.json").read_text())["stages"]}
    assert states == {"chain-1": "done", "chain-2": "interrupted"}
    again = subprocess.run(command(config, run_dir), env=environment(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming chain-2" in again.stderr
    got, want = final_states(run_dir), final_states(tmp_path / "reference")
    assert got.keys() == want.keys() and all(torch.equal(got[s][k], want[s][k]) for s in want for k in want[s])


def test_a_sigkilled_run_restarts_at_once_although_its_workers_linger(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text(tomli_w.dumps(CLIP))
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(command(config, run_dir), env=environment(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for_records(run_dir / "chain" / "02-test_B", 1, proc)
    os.kill(proc.pid, signal.SIGKILL)            # the main process only: its worker is orphaned for a while
    proc.wait()
    again = subprocess.run(command(config, run_dir), env=environment(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "is in use by" not in again.stderr
    with __import__("contextlib").suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)      # whatever is left of the first run's group
