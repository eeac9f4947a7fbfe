"""Optional Weights & Biases logging: one W&B run per stage, grouped by chain (``train.report_to`` has "wandb").

Install with ``pip install 'compt[wandb]'``. W&B reads its usual environment (``WANDB_MODE=offline`` logs to
``STAGE/wandb/offline-run-*`` with no network; ``wandb sync`` uploads those later). The group is the run
folder's name (one chain and its baselines), the W&B run name ``<stage key> <model>``. The W&B run id is kept in
``STAGE/wandb/run_id`` so that a resumed stage continues its W&B run (W&B drops steps it has already seen); a
stage started afresh gets a new id.
"""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path
from typing import Any

from compt.config import TrainConfig


def wandb_settings(train: TrainConfig, lineage: dict[str, Any] | None, model: str) -> dict[str, Any]:
    """Keyword arguments of `start_wandb` for one stage."""
    lineage = lineage or {}
    name = f"{lineage['stage']} {model}" if "stage" in lineage else model
    return {"project": train.wandb_project, "group": lineage.get("run"), "name": name,
            "config": {"model": model, "lineage": lineage, "train": dataclasses.asdict(train)}}


def start_wandb(out_dir: Path, *, fresh: bool, project: str, group: str | None, name: str,
                config: dict[str, Any]) -> Any:
    """A W&B run for the stage in `out_dir` (`fresh`: a new run id, else the stored one is resumed)."""
    import wandb

    id_file = out_dir / "wandb" / "run_id"
    if fresh or not id_file.is_file():
        id_file.parent.mkdir(parents=True, exist_ok=True)
        id_file.write_text(uuid.uuid4().hex[:12])
    return wandb.init(project=project, group=group, name=name, id=id_file.read_text().strip(), resume="allow",
                      dir=str(out_dir), config=config)
