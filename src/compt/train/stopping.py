"""Stopping a grown member when it reaches its target (``until = "baseline"`` or ``target = {…}``).

A stopping stage trains on a warmup–stable–decay schedule (`compt.train.optim.wsd_lr_at`) whose length is the
cap T (the member's ``epochs``). Its constant-lr trajectory is *probed*: at probe step s the state is branched
and cooled down as a WSD run of length L(s) would be — the shortest run whose cooldown starts at or after s::

    L(s) = min { L > s :  L − max(1, round(f·(L − w))) ≥ s }        f = cooldown fraction, w = warmup steps

— then evaluated on the run's *validation* split, which is disjoint from the held-out split the stage's final
metrics are reported on (stopping at the first noisy crossing of the reporting split would bias the reported
result in the chain's favour). The stage stops at the first probe whose branch meets every target::

    meets(x) ⇔ for every target metric m with value v:  x_m ≥ v (higher is better)  or  x_m ≤ v (lower is better)

and that branch is the stage's final model, trained for L(s) steps. A probe that misses is discarded — weights,
optimizer state and random stream restored, so the trajectory goes on exactly as if it had not been probed —
and its L(s) − s branch steps are counted in the stage's cost (``probe_steps``: they were paid for).

Probes come at s_k = ⌈k·P·N/B⌉, k = 1, 2, … (P = ``probe_every`` epochs, N samples per epoch, B the batch), for
every s_k ≥ w before the cap's own cooldown begins (whose branch then ends by the cap); the end of the cap is
the last probe (the full-length WSD run, no branch). Every probe is recorded (step, branch end, FLOPs spent so
far, validation metrics, met) in the stage's resume state and metrics log, so a run killed anywhere —
mid-branch included — resumes to the same result: the checkpoint of a probe step is written before its branch
starts. A stop signal during a branch is honoured at the next sync step of the trajectory.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


def cooldown_start(total: int, warmup: int, fraction: float) -> int:
    """The first cooldown step of a WSD run of `total` steps (`wsd_lr_at`'s S = total − C)."""
    return total - max(1, round(fraction * (total - warmup)))


def branch_total(step: int, warmup: int, fraction: float) -> int:
    """L(s): the length of the shortest WSD run whose cooldown starts at or after `step` (module docstring).
    `cooldown_start` grows by 0 or 1 per step of the run's length (f < 1), so the first length that reaches
    `step` is the shortest."""
    if not fraction < 1:
        raise ValueError(f"a cooldown branch needs a cooldown fraction below 1, got {fraction}")
    total = step + 1
    while cooldown_start(total, warmup, fraction) < step:
        total += 1
    return total


def probe_steps(*, total: int, warmup: int, fraction: float, every_epochs: float, samples: int,
                batch: int) -> tuple[int, ...]:
    """The probe steps s_k of a stage (module docstring), not counting the end of the cap."""
    last = cooldown_start(total, warmup, fraction)
    out, k = [], 1
    while (s := math.ceil(round(k * every_epochs * samples / batch, 9))) < last:   # 4.4·5 is 22, not 22.000…04
        if s >= max(warmup, 1) and branch_total(s, warmup, fraction) <= total:
            out.append(s)
        k += 1
    return tuple(out)


def meets(metrics: dict[str, float], target: dict[str, float], lower_is_better: Sequence[str]) -> bool:
    """Whether `metrics` reach every value of `target` (module docstring); a missing or NaN metric does not."""
    def ok(key: str, value: float) -> bool:
        x = metrics.get(key, math.nan)
        return (x <= value) if key in lower_is_better else (x >= value)
    return all(ok(k, v) for k, v in target.items())


@dataclass
class Snapshot:
    """The trainable state of a task and its optimizer, copied before a probe's branch (restored if it misses)."""

    tensors: list[Tensor]
    optimizer: dict[str, Any]

    @classmethod
    def take(cls, task: nn.Module, optimizer: torch.optim.Optimizer) -> Snapshot:
        return cls([t.detach().clone() for t in _state_tensors(task)], copy.deepcopy(optimizer.state_dict()))

    def restore(self, task: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        with torch.no_grad():
            for t, saved in zip(_state_tensors(task), self.tensors, strict=True):
                t.copy_(saved)
        optimizer.load_state_dict(self.optimizer)


def _state_tensors(task: nn.Module) -> list[Tensor]:
    """Every parameter of the task (student and its own, e.g. a distillation projection) and the student's
    buffers: what an optimizer step can change."""
    return [*task.parameters(), *task.student.buffers()]


def summary(target: dict[str, float], until: str, probes: list[dict[str, Any]], probe_steps: int) -> dict[str, Any]:
    """The ``stopping`` record of a stage's result: the rule, its target, whether a probe met it, where the stage
    stopped (the met probe, else the cap's end) and every probe."""
    met = next((p for p in probes if p["met"]), None)
    return {"until": until, "target": dict(target), "reached": met is not None,
            "stopped": met or (probes[-1] if probes else {}), "probe_steps": probe_steps, "probes": list(probes)}
