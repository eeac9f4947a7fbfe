"""Chaos: a test-size chain SIGKILLed at random points, resumed each time, ends exactly like an uninterrupted run.

`compt train` runs as a subprocess and is killed after a random amount of progress (a random number of
metrics records plus a random delay, so kills land in training steps, checkpoint writes, growth,
evaluation and start-up alike). Each kill leaves a stale run-directory lock that the next run takes over.
The end state — every stage's weights (sha256 of the state dict), metrics records and evaluation history —
must equal that of an uninterrupted run of the same config in this process.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomli_w
import torch

from compt.chain import train_run
from compt.config import config_from_dict
from compt.train.metrics import TIMING_KEYS

KILLS = 4
RAW = {"name": "chaos", "data": {"kind": "synthetic", "num_samples": 48, "eval_samples": 16, "probe_samples": 16},
       "train": {"batch_size": 16, "warmup_steps": 1, "stage_warmup_steps": 1, "ckpt_every_steps": 1,
                 "eval_every_epochs": 1},
       "chain": [{"model": "test/A", "epochs": 2},
                 {"model": "test/B", "epochs": 1, "growth": "preserve", "distill": "fd"},
                 {"model": "test/C", "epochs": 1, "growth": "corner", "distill": "affinity"}]}


def weights_sha256(run_dir: Path) -> dict[str, str]:
    out = {}
    for path in sorted(run_dir.glob("chain/*/final.pt")):
        state = torch.load(path, weights_only=True)["state_dict"]
        h = hashlib.sha256()
        for k in sorted(state):
            h.update(k.encode() + state[k].numpy().tobytes())
        out[path.parent.name] = h.hexdigest()
    return out


def records(run_dir: Path) -> dict[str, list[dict]]:
    return {p.parent.name: [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS}
                            for line in p.read_text().splitlines()]
            for p in sorted(run_dir.glob("chain/*/metrics.jsonl"))}


def history(run_dir: Path) -> dict[str, list[dict]]:
    return {p.parent.name: json.loads(p.read_text())["history"] for p in sorted(run_dir.glob("chain/*/result.json"))}


def progress(run_dir: Path) -> int:
    """Metrics records written so far (a resumed stage first truncates to its checkpoint)."""
    return sum(len(p.read_text().splitlines()) for p in run_dir.glob("chain/*/metrics.jsonl"))


def train_command(config: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "compt", "train", str(config), "--run-dir", str(run_dir), "--no-progress"]


def kill_after(proc: subprocess.Popen, run_dir: Path, target: int, delay: float) -> bool:
    """SIGKILL `proc` once `target` metrics records exist plus `delay` s; False if it finished first."""
    while proc.poll() is None and progress(run_dir) < target:
        time.sleep(0.02)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def checkpointed(run_dir: Path) -> dict[str, int]:
    """Each unfinished stage's checkpointed step (its last.pt, no result.json yet)."""
    return {p.parent.name: torch.load(p, weights_only=True)["train_state"]["progress"]["step"]
            for p in run_dir.glob("chain/*/last.pt") if not (p.parent / "result.json").is_file()}


def assert_resumed_where_it_stopped(owed: dict[str, int], console: str) -> None:
    """The next process said it resumed each checkpointed stage at its checkpoint's step (a silent restart
    says nothing). Each process is killed only after it wrote new records,
    so it has always set up the first unfinished stage, where a resume is announced."""
    said = dict(re.findall(r"resuming \S+ \((\S+)\) at step (\d+) of \d+", console))
    for stage, step in owed.items():
        model = stage.split("-", 1)[1].replace("_", "/")
        assert said.get(model) == str(step), f"{stage} was checkpointed at step {step}; the rerun said {said}"


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    train_run(config_from_dict(RAW), reference, progress=False)
    total = progress(reference)
    config = tmp_path / "chaos.toml"
    config.write_text(tomli_w.dumps(RAW))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    rng = random.Random(13)
    run_dir, killed, messages = tmp_path / "chaos", 0, ""
    for _ in range(KILLS):
        done = progress(run_dir) if run_dir.exists() else 0
        target = rng.randint(min(done + 1, total - 1), total - 1)  # at least one new record: real progress
        owed = checkpointed(run_dir)
        proc = subprocess.Popen(train_command(config, run_dir), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        killed += kill_after(proc, run_dir, target, rng.uniform(0.0, 0.4))
        err = proc.stderr.read() if proc.stderr else ""
        assert_resumed_where_it_stopped(owed, err)   # where a kill landed inside a stage
        messages += err
    assert killed >= KILLS - 1, "the chain finished before it could be killed"
    owed = checkpointed(run_dir)
    last = subprocess.run(train_command(config, run_dir), env=env, capture_output=True, text=True, timeout=300)
    assert last.returncode == 0, last.stderr[-2000:]
    assert_resumed_where_it_stopped(owed, last.stderr)
    assert "taking over the lock" in messages + last.stderr  # a killed run's lock is stale, not a blocker
    assert all(s["state"] == "done" for s in json.loads((run_dir / "run.json").read_text())["stages"])
    assert weights_sha256(run_dir) == weights_sha256(reference) and len(weights_sha256(reference)) == 3
    assert records(run_dir) == records(reference)
    assert history(run_dir) == history(reference)
