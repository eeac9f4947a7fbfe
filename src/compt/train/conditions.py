"""The conditions a stage's wall-clock was measured under, and whether other work shared its CPU.

Wall-clock figures of different stages are only comparable when each stage had its cores to itself. Over a
training session `Probe` records, besides the device and the number of intra-op threads T:

    u = CPU time / (wall time × T)          the process's CPU utilisation (all its threads)
    w = Σ run-queue wait / Σ (on-CPU + run-queue wait)   over the process's threads (Linux schedstat)

and the 1-minute load average at start and end. w measures contention directly: the share of the time the
stage's threads were ready to run but waited for a core another process held (three CPU-bound processes on
two cores: w ≈ 1/3). u also drops under contention (u ≈ 2/3 there) but drops as well when threads idle —
many threads on a small model, data loading, synchronising with a GPU — so it decides only where w cannot
be read. A stage is *contended* when

    w > WAIT_MAX                              where schedstat is readable, else
    u < UTILISATION_MIN (CPU)  or  load > cores (GPU: the host that feeds it was oversubscribed)

Sharing of the GPU itself is not checked. A resumed stage's conditions cover its last session only
(``session_wall_s`` says how long that was). CPU time of DataLoader worker processes is not included.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

WAIT_MAX = 0.10          # run-queue wait share above which a stage counts as contended
UTILISATION_MIN = 0.80   # CPU utilisation below which a CPU stage counts as contended (no schedstat)


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _schedstat() -> dict[str, tuple[int, int]] | None:
    """{thread id: (ns on CPU, ns waiting on a run queue)} of this process; None where unreadable."""
    out = {}
    try:
        for task in Path("/proc/self/task").iterdir():
            with open(task / "schedstat") as f:
                run, wait = f.read().split()[:2]
            out[task.name] = (int(run), int(wait))
    except (OSError, ValueError):
        return None
    return out or None


def _wait_share(before: dict[str, tuple[int, int]] | None, after: dict[str, tuple[int, int]] | None) -> float | None:
    """w over the interval; threads born in between count from zero, threads that ended are lost."""
    if before is None or after is None:
        return None
    run = wait = 0
    for tid, (r, w) in after.items():
        r0, w0 = before.get(tid, (0, 0))
        run, wait = run + r - r0, wait + w - w0
    return wait / (run + wait) if run + wait > 0 else None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if Path("/proc/cpuinfo").is_file():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or device.type


@dataclass
class Probe:
    """Started when a training session starts; `finish` returns the conditions dict stored in result.json."""

    wall: float = field(default_factory=time.perf_counter)
    cpu: float = field(default_factory=time.process_time)
    load: float | None = field(default_factory=_load)
    sched: dict[str, tuple[int, int]] | None = field(default_factory=_schedstat)

    def finish(self, device: torch.device) -> dict[str, Any]:
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        threads = torch.get_num_threads()
        c = {"device": device.type, "device_name": device_name(device), "threads": threads,
             "cpu_count": os.cpu_count() or 1, "load_start": self.load, "load_end": _load(),
             "session_wall_s": wall, "cpu_s": cpu, "cpu_utilisation": cpu / max(wall * threads, 1e-9),
             "runqueue_wait": _wait_share(self.sched, _schedstat())}
        return {**c, "contended": bool(contention(c))}


def contention(c: dict[str, Any]) -> list[str]:
    """Why a stage's wall-clock counts as measured under contention (empty: it does not)."""
    loads = [x for x in (c.get("load_start"), c.get("load_end")) if x is not None]
    load = f"; load average {' → '.join(f'{x:.1f}' for x in loads)} on {c['cpu_count']} cores" if loads else ""
    threads = f"{c['threads']} thread" + ("s" if c["threads"] != 1 else "")
    util = f"CPU time / (wall × {threads}) = {c['cpu_utilisation']:.2f}"
    if c["threads"] > c["cpu_count"]:
        load += f"; {threads} on {c['cpu_count']} cores"
    w = c.get("runqueue_wait")
    if w is not None:
        return [f"its threads waited for a CPU {100 * w:.0f} % of the time ({util}{load})"] if w > WAIT_MAX else []
    if c["device"] == "cpu" and c["cpu_utilisation"] < UTILISATION_MIN:
        return [f"{util}{load}"]
    if c["device"] != "cpu" and loads and max(loads) > c["cpu_count"]:
        return [f"the host was oversubscribed{load}"]
    return []
