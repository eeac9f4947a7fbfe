"""The pieces of the stage loop (`compt.train.trainer`, every paradigm's one trainer): the loop's state, resuming it
from a ``train_state``, the metrics log, the step's schedule and gradient step, what a step must do (`due_at`), the
sync-free loss handling (`track_finite`, `sync_losses`), the resume checkpoint ``last.pt`` and the "SIGTERM/SIGINT
→ checkpoint after the step, then stop" handling.

The loop is *sync-free*: a step's losses stay on the device, and only *sync steps* (a step with anything due)
reduce them over ranks and read them on the host; a non-finite loss since the last sync step then stops the run
before anything is saved, and a stop signal is honoured.

What differs by paradigm (the task, the data, a batch's forward) comes from `compt.paradigm.Paradigm`.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from compt import distributed
from compt.config import TrainConfig
from compt.distributed import DistInfo
from compt.errors import Interrupted, UserError
from compt.stage import StageSpec
from compt.train.metrics import MetricsLog
from compt.train.optim import distill_scale, schedule_lr_at, set_lr
from compt.train.state import Progress, restore_rank_rng, rng_state
from compt.train.wandb_log import wandb_settings

WriteLast = Callable[[Path, dict[str, Tensor], dict[str, Any]], Any]


@dataclass(kw_only=True)
class LoopState:
    """The stage loop's state that this module's pieces read and write (settings come from `spec` only); the one
    trainer's stage state (`compt.train.trainer`) extends it with the data, the paradigm and the evaluations."""

    out_dir: Path
    spec: StageSpec
    info: DistInfo
    task: Any                   # the paradigm's task: extra_state(), load_extra_state(), student
    optimizer: torch.optim.Optimizer
    lineage: dict[str, Any]
    progress: Progress
    log: MetricsLog
    unmanaged: list[nn.Parameter] = field(default_factory=list)   # task parameters outside the wrapped student
    started: float = field(default_factory=time.perf_counter)
    eval_s: float = 0.0
    stop: dict[str, int] = field(default_factory=lambda: {"signal": 0})   # set by `stop_signals`

    @property
    def train(self) -> TrainConfig:
        return self.spec.train

    @property
    def total_steps(self) -> int:
        return self.spec.total_steps

    def wall(self) -> float:
        """Accumulated training wall clock: earlier sessions plus this one, evaluation excluded."""
        return self.progress.wall_clock_s + time.perf_counter() - self.started - self.eval_s


def resume_progress(task: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any] | None,
                    train: TrainConfig) -> Progress:
    """The progress of a resumed ``train_state`` (restoring optimizer state and this rank's RNG state too), or
    a fresh one."""
    if state is None:
        return Progress()
    distributed.load_optimizer_state_dict(task, optimizer, state["optimizer"], train.fsdp)
    restore_rank_rng(state["rng"], distributed.rank())
    return Progress.from_dict(state["progress"])


def open_log(out_dir: Path, spec: StageSpec, info: DistInfo, prog: Progress, resumed: bool,
             lineage: dict[str, Any] | None, progress: bool) -> MetricsLog:
    """The stage's metrics log, cut back to the resume point when `resumed`."""
    train = spec.train
    return MetricsLog(out_dir, enabled=info.is_main, progress=progress, total_steps=spec.total_steps,
                      step=prog.step, truncate_to=prog.metrics_offset if resumed else None,
                      desc=spec.model.name, report_to=train.report_to,
                      wandb=wandb_settings(train, lineage, spec.model.name))


def schedule_step(st: LoopState, step: int, total: int | None = None) -> float:
    """Set the learning rate (`schedule_lr_at`) and distillation weight (`distill_scale`) of optimizer step
    `step` (0-based) of a run of `total` steps (default: the stage's; a stopping probe's branch is shorter);
    returns the learning rate."""
    s, total = st.spec, total or st.spec.total_steps
    lr = schedule_lr_at(step, schedule=s.schedule, base_lr=s.lr, min_lr=s.min_lr, warmup=s.warmup_steps,
                        total=total, decay_fraction=s.decay_fraction, shape=s.cooldown_shape)
    set_lr(st.optimizer, lr)
    st.task.weight_scale = distill_scale(step, total, s.distill_schedule)
    return lr


def apply_grads(st: LoopState) -> None:
    """After backward: all-reduce the gradients DDP/FSDP do not manage, clip (``train.grad_clip > 0``), step."""
    distributed.all_reduce_grads(st.unmanaged)
    if st.train.grad_clip > 0:
        params = [p for group in st.optimizer.param_groups for p in group["params"]]
        distributed.clip_grad_norm(params, st.train.grad_clip)
    st.optimizer.step()


def save_last(st: LoopState, write: WriteLast) -> None:
    """Resume checkpoint (every rank takes part in gathering sharded state and every rank's RNG state; rank 0
    calls `write`)."""
    weights = distributed.model_state_dict(st.task.student)
    optim = distributed.optimizer_state_dict(st.task, st.optimizer, st.train.fsdp)
    rngs = distributed.gather_objects(rng_state())  # one state per rank, in rank order
    st.progress.wall_clock_s, st.started, st.eval_s = st.wall(), time.perf_counter(), 0.0
    st.progress.metrics_offset = st.log.offset()
    if st.info.is_main:
        state = {"progress": st.progress.to_dict(), "optimizer": optim, "task": st.task.extra_state(),
                 "rng": rngs, "total_steps": st.total_steps, "batch_size": st.spec.batch_size}
        write(st.out_dir / "last.pt", weights, state)
    distributed.barrier()


def due_at(step: int, *, samples: int, batch: int, total: int, train: TrainConfig, evaluates: bool
           ) -> dict[str, bool]:
    """What optimizer step `step` (1-based: the steps done) must do; the step is a sync step when any holds.

    An epoch of `samples` ends at step s when ⌊s·batch/samples⌋ > ⌊(s−1)·batch/samples⌋; s = `total` is last.

    * ``log``: s ≡ 0 (mod ``train.log_every_steps``), or the last step;
    * ``eval`` (only when `evaluates`): the last step, or, with e = ``train.eval_every_epochs`` > 0, a step that
      crosses a multiple of e epochs: ⌊s·batch/(samples·e)⌋ > ⌊(s−1)·batch/(samples·e)⌋ (for a whole e, the
      epoch ends whose epoch count e divides; e may be a fraction of an epoch);
    * ``ckpt``: the last step, every evaluation (the CLIP trainer writes that checkpoint before evaluating, so
      a crash in evaluation loses no training), and s ≡ 0 (mod ``train.ckpt_every_steps``) — each epoch end
      when that is 0.
    """
    epochs_done = step * batch // samples
    epoch_end = epochs_done > (step - 1) * batch // samples
    last = step == total
    every = Fraction(train.eval_every_epochs).limit_denominator(10_000)
    crossed = every > 0 and (step * batch // (samples * every)) > ((step - 1) * batch // (samples * every))
    evaluate = evaluates and (last or crossed)
    every = train.ckpt_every_steps
    ckpt = last or evaluate or (step % every == 0 if every > 0 else epoch_end)
    return {"log": step % max(train.log_every_steps, 1) == 0 or last, "eval": evaluate, "ckpt": ckpt}


def track_finite(finite: Tensor, sums: dict[str, Tensor]) -> Tensor:
    """`finite` (a 0-d bool tensor) and whether every loss part in `sums` is finite — on the device, no sync."""
    return finite & torch.stack([v.reshape(()) for v in sums.values()]).isfinite().all()


def sync_losses(st: LoopState, sums: dict[str, Tensor], finite: Tensor) -> tuple[dict[str, float], bool]:
    """At a sync step: the mean over ranks of every loss part and whether any rank was asked to stop
    (`reduce_losses`: one collective, one host sync); `UserError` naming the last good checkpoint when any
    rank's `finite` flag (`track_finite`) says it saw a non-finite loss since the last sync step."""
    losses, stopped, all_finite = reduce_losses(sums, st.stop, st.info, finite)
    if not all_finite:
        bad = ", ".join(f"{k}={v}" for k, v in losses.items() if not math.isfinite(v)) or "an earlier step"
        raise UserError(f"non-finite loss by step {st.progress.step} ({bad}); stopped without saving — the last "
                        f"good checkpoint is {st.out_dir / 'last.pt'}")
    return losses, stopped


def reduce_losses(sums: dict[str, Tensor], stop: dict[str, int], info: DistInfo,
                  finite: Tensor) -> tuple[dict[str, float], bool, bool]:
    """Mean over ranks of every loss part, whether any rank was asked to stop and whether every rank's
    `finite` flag (a 0-d bool tensor) holds — one collective, one host sync."""
    keys = sorted(sums)
    flags = torch.stack([(~finite).float(), torch.tensor(float(stop["signal"] > 0), device=info.device)])
    values = distributed.all_reduce_mean(torch.cat([torch.stack([sums[k] for k in keys]), flags])).tolist()
    return dict(zip(keys, values[:-2], strict=True)), values[-1] > 0, not values[-2] > 0


def raise_stopped(st: LoopState, step: int) -> None:
    """After the checkpoint of a stopped step: the `Interrupted` that tells the user how to resume."""
    name = signal.Signals(st.stop["signal"]).name if st.stop["signal"] else "a signal on another rank"
    raise Interrupted(f"stopped by {name} after step {step}/{st.total_steps}; checkpoint saved to "
                      f"{st.out_dir / 'last.pt'} — run the same command again to resume")


@contextlib.contextmanager
def stop_signals(flag: dict[str, int] | None = None) -> Iterator[dict[str, int]]:
    """While training, SIGTERM/SIGINT only set ``flag["signal"]``: the loop checkpoints after the step and stops."""
    flag = {"signal": 0} if flag is None else flag
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, _frame: Any) -> None:
        flag["signal"] = signum

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)
