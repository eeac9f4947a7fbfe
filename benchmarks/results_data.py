"""What the results generators share: the repository root, the CLIP study's headline metrics, number and path
formatting, the machine line, and each variant's finished seed runs (loaded once per process)."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

import torch

from compt.clip.paradigm import PARADIGM as CLIP
from compt.report import RunSummary, load_run

ROOT = Path(__file__).resolve().parents[1]
METRICS = tuple((m.key, m.label) for m in CLIP.metrics)   # the CLIP study's headline metrics


def pm(stat: dict | None, digits: int = 1) -> str:
    if not stat:
        return "—"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}" if stat["n"] > 1 else f"{stat['mean']:.{digits}f}"


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        model = cpu
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}"


@functools.cache
def complete_runs(variant_dir: Path, baselines: bool = True) -> tuple[tuple[Path, RunSummary], ...]:
    """The variant's seed runs whose chain (and, with `baselines`, every baseline) has finished, each loaded
    once per process (the paired and pay-off tables read runs the experiment tables already loaded)."""
    out = []
    for d in sorted(variant_dir.glob("seed*")):
        if not (d / "config.toml").is_file():
            raise SystemExit(f"make_results: {d} holds no config.toml: not a run summary (remove it or rerun it)")
        run = load_run(d)   # an unreadable run stops the generator: its numbers are never silently dropped
        if len(run.chain) == len(run.cfg.chain) and (not baselines or all(r is not None for r in run.individual)):
            out.append((d, run))
    return tuple(out)
