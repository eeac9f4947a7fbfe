"""Metrics of a stage: JSONL lines, TensorBoard scalars and a tqdm bar — written by rank 0 only.

`metrics.jsonl` holds one object per logged step (``{"kind": "train", "step", "epoch", "samples", "flops",
"lr", "loss", …, "images_per_s"}``) or evaluation (``{"kind": "eval", …metrics}``). A resumed stage first
truncates the file to the byte offset its checkpoint recorded and TensorBoard purges events from the resume
step on, so a killed-and-resumed stage leaves the same logs as an uninterrupted one. The numeric fields also go
to each sink named in ``train.report_to``: TensorBoard (``tb/``) and Weights & Biases (`compt.train.wandb_log`).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

TIMING_KEYS = ("images_per_s", "time_s", "wall_s")   # wall-clock dependent: differ between otherwise identical runs


class MetricsLog:
    """Append-only metrics of one stage; a no-op on ranks other than 0."""

    def __init__(self, out_dir: Path, *, enabled: bool, progress: bool, total_steps: int, step: int,
                 truncate_to: int | None, desc: str = "", report_to: tuple[str, ...] = ("tensorboard",),
                 wandb: dict[str, Any] | None = None) -> None:
        self.enabled, self.path = enabled, out_dir / "metrics.jsonl"
        self.writer = self.wandb = None
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
        if "tensorboard" in report_to:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out_dir / "tb"), purge_step=step + 1 if truncate_to is not None else None)
        if "wandb" in report_to:
            from compt.train.wandb_log import start_wandb

            self.wandb = start_wandb(out_dir, fresh=truncate_to is None, **(wandb or {}))

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
        """One JSONL line plus a scalar per numeric field in each `report_to` sink (x axis: step)."""
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        scalars = {f"{prefix}/{k}": v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        for key, value in scalars.items() if self.writer is not None else ():
            self.writer.add_scalar(key, value, record["step"])
        if self.wandb is not None:
            self.wandb.log(scalars, step=record["step"])

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()
