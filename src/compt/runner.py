"""`train_run`: train a run config of either model kind in its run directory.

CLIP runs go to `compt.chain.train_chain`, language-model runs (``lm/…`` members) to
`compt.lm.chain.train_lm_chain`; both share the run layout, stage plan, resume rules and fingerprints of
`compt.chain`. This is the entry point of ``compt train`` and ``compt demo``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compt.config import RunConfig
from compt.lm.models import is_lm


def train_run(cfg: RunConfig, run_dir: str | Path, *, baselines: bool | None = None, from_stage: str | None = None,
              progress: bool = True) -> dict[str, dict[str, Any]]:
    """Every stage of `cfg` in `run_dir` (resuming finished work); results by stage key."""
    if is_lm(cfg.chain[0].model):
        from compt.lm.chain import train_lm_chain

        return train_lm_chain(cfg, run_dir, baselines=baselines, from_stage=from_stage, progress=progress)
    from compt.chain import train_chain

    return train_chain(cfg, run_dir, baselines=baselines, from_stage=from_stage, progress=progress)
