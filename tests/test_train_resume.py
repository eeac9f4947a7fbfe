"""Resume guarantees: SIGKILL mid-epoch → bit-identical end state; SIGTERM → checkpoint; NaN → clear error.

Run as a script (``python tests/test_train_resume.py OUT KILL_AT THREADS``) it trains the reference stage
and SIGKILLs itself right after optimizer step KILL_AT — the "crash" the test then resumes from.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import StepLog, ToyPairs, assert_resumed, final_weights, read_metrics, stage_kwargs

from compt.config import TrainConfig
from compt.errors import UserError
from compt.train import train_stage
from compt.train.stage_loop import due_at

# A distillation stage with an FD projection (test/C embed 24 ← test/B embed 16), 12 steps over 3 epochs,
# checkpoints every 3 steps and an evaluation every epoch.
STAGE = {"model": "test/C", "teacher": "test/B", "distill": "fd+affinity", "epochs": 3, "ckpt_every_steps": 3,
         "eval_every_epochs": 1, "teacher_cache": False, "grad_clip": 1.0}


def probe(model: torch.nn.Module) -> dict[str, float]:
    """A deterministic 'evaluation': statistics of the weights."""
    return {"proj_norm": model.visual.proj.norm().item(), "scale": model.logit_scale.item()}


def _run(out: Path, **kw) -> object:
    return train_stage(**stage_kwargs(out, **STAGE), evaluate=probe, **kw)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    _run(out)
    return out


def _assert_same_end_state(a: Path, b: Path) -> None:
    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "weights differ"
    assert read_metrics(a) == read_metrics(b)
    assert read_metrics(a, "eval") == read_metrics(b, "eval")
    ra, rb = (torch.load(p / "last.pt", weights_only=True)["train_state"] for p in (a, b))
    assert ra["progress"]["history"] == rb["progress"]["history"]
    opt_a, opt_b = ra["optimizer"]["state"], rb["optimizer"]["state"]
    assert all(torch.equal(opt_a[i][k], opt_b[i][k]) for i in opt_a for k in opt_a[i])


def _step_of(out: Path) -> int:
    return torch.load(out / "last.pt", weights_only=True)["train_state"]["progress"]["step"]


def test_sigkill_mid_epoch_then_resume_is_bit_identical(reference: Path, tmp_path: Path, monkeypatch,
                                                        capsys) -> None:
    script = Path(__file__).resolve()
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), "7", str(torch.get_num_threads())],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert _step_of(tmp_path) == 6 and not (tmp_path / "final.pt").exists()
    log = StepLog(monkeypatch)
    result = _run(tmp_path)
    assert result.steps == 12 and len(result.history) == 3
    assert_resumed(log, "test/C", 6, 12, capsys.readouterr().err)
    _assert_same_end_state(reference, tmp_path)


def _sigterm_at_step_6(tmp_path: Path) -> None:
    def terminate(step: int) -> None:
        if step == 5:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(UserError, match="SIGTERM after step 6/12"):  # seen after the next step
        _run(tmp_path, on_step=terminate)
    assert _step_of(tmp_path) == 6 and not (tmp_path / "final.pt").exists()


def test_sigterm_writes_checkpoint_then_resume_matches(reference: Path, tmp_path: Path, monkeypatch,
                                                       capsys) -> None:
    _sigterm_at_step_6(tmp_path)
    log = StepLog(monkeypatch)
    _run(tmp_path)
    assert_resumed(log, "test/C", 6, 12, capsys.readouterr().err)
    _assert_same_end_state(reference, tmp_path)


def test_a_silent_restart_passes_the_end_state_check_but_not_the_resume_check(reference: Path, tmp_path: Path,
                                                                              monkeypatch, capsys) -> None:
    """Why every resume test also asserts where the resumed process started: a resume that quietly restarts
    from step 0 (here: last.pt ignored on purpose) still ends bit-identical."""
    from compt.train import trainer

    _sigterm_at_step_6(tmp_path)
    monkeypatch.setattr(trainer, "_load_resume", lambda path, spec: None)
    log = StepLog(monkeypatch)
    _run(tmp_path)
    _assert_same_end_state(reference, tmp_path)          # the old check cannot tell
    with pytest.raises(AssertionError, match="restarted at step \\[0\\] instead of resuming at 6"):
        assert_resumed(log, "test/C", 6, 12, capsys.readouterr().err)


def test_checkpoints_are_self_describing_and_load_weights_only(reference: Path) -> None:
    last = torch.load(reference / "last.pt", weights_only=True)
    assert last["format"] == "compt-checkpoint/1" and last["model_config"]["name"] == "test/C"
    assert last["lineage"]["train_stage"]["distill"] == "fd+affinity"
    assert {"optimizer", "rng", "progress", "task"} <= set(last["train_state"])
    assert last["train_state"]["task"]["proj.weight"].shape == (16, 24)
    final = torch.load(reference / "final.pt", weights_only=True)
    assert "train_state" not in final and final["lineage"]["train_stage"]["teacher"] == "test/B"


class Poisoned(ToyPairs):
    """Images turn to NaN once `poison` is set."""

    poison = False

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image, tokens, index = super().__getitem__(i)
        return (image * float("nan") if self.poison else image), tokens, index


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    data = Poisoned(64, captions=2)

    def poison(step: int) -> None:
        data.poison = step >= 3

    kwargs = stage_kwargs(tmp_path, dataset=data, ckpt_every_steps=2, loader_workers=0)  # poisoned in-process
    with pytest.raises(UserError, match="non-finite loss by step 4"):
        train_stage(**kwargs, on_step=poison)
    assert _step_of(tmp_path) == 2 and not (tmp_path / "final.pt").exists()


def test_losses_are_read_only_at_sync_steps_and_nan_is_caught_there(tmp_path: Path, monkeypatch) -> None:
    """Log every 3 steps, checkpoint at epoch ends (every 4): steps 3, 4, 6, 8 read losses, no other step.
    A NaN from step 5 on is caught at the next sync step (6), before anything is saved after step 4."""
    from compt.train import trainer

    synced: list[int] = []
    sync = trainer.sync_losses
    monkeypatch.setattr(trainer, "sync_losses", lambda st, *a: synced.append(st.progress.step) or sync(st, *a))
    train_stage(**stage_kwargs(tmp_path / "ok", log_every_steps=3))
    assert synced == [3, 4, 6, 8]
    data = Poisoned(64, captions=2)

    def poison(step: int) -> None:
        data.poison = step >= 4

    with pytest.raises(UserError, match="non-finite loss by step 6"):
        train_stage(**stage_kwargs(tmp_path / "nan", dataset=data, log_every_steps=3, loader_workers=0), on_step=poison)
    assert _step_of(tmp_path / "nan") == 4


def test_due_at_gives_the_sync_steps() -> None:
    """64 samples, batch 16 (an epoch ends every 4 steps), 12 steps, log every 3, evaluate every 2 epochs."""
    train = TrainConfig(batch_size=16, log_every_steps=3, eval_every_epochs=2)

    def steps(kind: str, train: TrainConfig = train, evaluates: bool = True) -> list[int]:
        return [s for s in range(1, 13)
                if due_at(s, samples=64, batch=16, total=12, train=train, evaluates=evaluates)[kind]]

    assert steps("log") == [3, 6, 9, 12]
    assert steps("eval") == [8, 12] and steps("eval", evaluates=False) == [] and steps("ckpt") == [4, 8, 12]
    every5 = dataclasses.replace(train, ckpt_every_steps=5)
    assert steps("ckpt", every5) == [5, 8, 10, 12]  # the evaluation at step 8 gets its checkpoint
    assert steps("ckpt", every5, evaluates=False) == [5, 10, 12]
    half = dataclasses.replace(train, eval_every_epochs=0.5)           # every 2 steps; a quarter epoch: every step
    assert steps("eval", half) == [2, 4, 6, 8, 10, 12] and steps("ckpt", half) == [2, 4, 6, 8, 10, 12]
    assert steps("eval", dataclasses.replace(train, eval_every_epochs=0.25)) == list(range(1, 13))
    assert steps("eval", dataclasses.replace(train, eval_every_epochs=1.5)) == [6, 12]



def test_crash_in_evaluation_loses_no_training(tmp_path: Path) -> None:
    """The last step's checkpoint is written before its evaluation; a crash there resumes into the evaluation."""
    calls: list[int] = []

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("evaluation crashed")
        return {"acc": float(len(calls))}

    with pytest.raises(RuntimeError, match="evaluation crashed"):
        train_stage(**stage_kwargs(tmp_path, eval_every_epochs=1), evaluate=evaluate)
    assert _step_of(tmp_path) == 8 and not (tmp_path / "final.pt").exists()
    steps: list[int] = []
    result = train_stage(**stage_kwargs(tmp_path, eval_every_epochs=1), evaluate=evaluate, on_step=steps.append)
    assert steps == [] and [(h["step"], h["acc"]) for h in result.history] == [(4, 1.0), (8, 3.0)]
    assert [r["acc"] for r in read_metrics(tmp_path, "eval")] == [1.0, 3.0]

if __name__ == "__main__":  # the crashing run of test_sigkill_mid_epoch_then_resume_is_bit_identical
    out, kill_at, threads = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(threads)

    def crash(step: int) -> None:
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    _run(out, on_step=crash)
