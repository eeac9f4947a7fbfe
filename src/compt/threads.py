"""How many torch threads a training process uses — resolved once per run and recorded in it.

Float reductions are split differently with a different thread count, so a run's numbers are bit-exact
only at a fixed count; `configure_threads` returns what it chose and why, and the chain writes it into
``run.json`` and every stage's ``lineage.json``.

Default (``train.threads = 0``): the user's ``OMP_NUM_THREADS`` when set, else the CPUs this process may
use (its affinity mask, capped by a cgroup CPU quota) divided by the ranks on this machine
(``LOCAL_WORLD_SIZE`` under torchrun), at least 1. ``train.threads = N`` forces N, at most `MAX_THREADS`
(1024: more than any one machine's cores, a fixed bound so that a config validates the same everywhere).
The CLI also sets ``OMP_WAIT_POLICY=PASSIVE`` unless the user set it: OpenMP's default busy-waiting is what
makes torch's thread team collapse when another process competes for the same cores
(``benchmarks/results/threads.md``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

MAX_THREADS = 1024  # highest train.threads (module doc)


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 ``cpu.max`` quota."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def local_ranks() -> int:
    """Training processes on this machine (torchrun's LOCAL_WORLD_SIZE; 1 alone)."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))


def resolve_threads(requested: int) -> dict[str, Any]:
    """The thread count for `requested` (``train.threads``; 0 = automatic) and where it came from."""
    if requested < 0:
        from compt.errors import UserError

        raise UserError(f"train.threads must be 0 (automatic) or positive, got {requested}")
    cpus, ranks = available_cpus(), local_ranks()
    env = os.environ.get("OMP_NUM_THREADS", "")
    if requested > 0:
        n, source = requested, "train.threads"
    elif env.isdigit() and int(env) > 0:
        n, source = int(env), "OMP_NUM_THREADS"
    else:
        n, source = max(1, cpus // ranks), "cpus // local ranks"
    return {"threads": n, "source": source, "cpus": cpus, "local_ranks": ranks}


def configure_threads(requested: int) -> dict[str, Any]:
    """Set torch's intra-op thread count (see module doc); returns `resolve_threads`'s record."""
    import torch

    info = resolve_threads(requested)
    if torch.get_num_threads() != info["threads"]:
        torch.set_num_threads(info["threads"])
    return info


def passive_wait_policy() -> None:
    """Make idle OpenMP threads sleep instead of spin (must run before torch is imported; user's value wins)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
