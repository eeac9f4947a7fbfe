"""Metrics of a stage: JSONL lines, TensorBoard scalars and a tqdm bar — written by rank 0 only.

`metrics.jsonl` holds one object per logged step (``{"kind": "train", "step", "epoch", "samples", "flops",
"lr", "loss", …, "images_per_s"}``) or evaluation (``{"kind": "eval", …metrics}``). A resumed stage first
truncates the file to the byte offset its checkpoint recorded and TensorBoard purges events from the resume
step on, so a killed-and-resumed stage leaves the same logs as an uninterrupted one.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

TIMING_KEYS = ("images_per_s", "time_s")  # wall-clock dependent: differ between otherwise identical runs


class MetricsLog:
    """Append-only metrics of one stage; a no-op on ranks other than 0."""

    def __init__(self, out_dir: Path, *, enabled: bool, progress: bool, total_steps: int, step: int,
                 truncate_to: int | None, desc: str = "") -> None:
        self.enabled, self.path = enabled, out_dir / "metrics.jsonl"
        self.writer = None
        self.bar = tqdm(total=total_steps, initial=step, desc=desc, disable=not (enabled and progress),
                        dynamic_ncols=True, unit="step")
        self._mark = (time.perf_counter(), step)
        if not enabled:
            return
        if truncate_to is not None and self.path.exists():
            with open(self.path, "r+b") as f:
                f.truncate(truncate_to)
        elif truncate_to is None:  # a fresh stage: drop logs of an attempt that never reached a checkpoint
            self.path.write_text("")
            shutil.rmtree(out_dir / "tb", ignore_errors=True)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(out_dir / "tb"), purge_step=step + 1 if truncate_to is not None else None)

    def offset(self) -> int:
        """Current size of metrics.jsonl, stored in checkpoints for truncation on resume."""
        return self.path.stat().st_size if self.enabled and self.path.exists() else 0

    def throughput(self, step: int, batch_size: int) -> float:
        """Images per second since the last call (each rank's share times the world: global images)."""
        now, (then, before) = time.perf_counter(), self._mark
        self._mark = (now, step)
        return batch_size * (step - before) / max(now - then, 1e-9)

    def step(self, postfix: dict[str, float]) -> None:
        self.bar.update(1)
        if postfix:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)

    def write(self, record: dict[str, Any], prefix: str) -> None:
        """One JSONL line plus a TensorBoard scalar for every numeric field (x axis: step)."""
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if isinstance(value, (int, float)) and key not in ("step", "kind"):
                self.writer.add_scalar(f"{prefix}/{key}", value, record["step"])

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()
