"""Resume state of a stage: RNG states and the `train_state` dict stored in `last.pt`.

Every rank draws from its own random stream (`compt.distributed.seed_rank`), so ``train_state["rng"]`` holds
one `rng_state` per rank, in rank order; checkpoints from before per-rank streams hold a single dict.

Everything in it loads with ``torch.load(weights_only=True)``: tensors, numbers, strings, lists, tuples
and dicts only (numpy's RNG key becomes an int64 tensor, Python's state stays a tuple of ints).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch CPU (and CUDA, when present) generator states."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def restore_rank_rng(stored: dict[str, Any] | list[dict[str, Any]], rank: int) -> None:
    """Restore `rank`'s saved generator states from ``train_state["rng"]``.

    An old checkpoint's single dict is restored on every rank (what it was written for). A rank the checkpoint
    has no state for (resumed on more ranks than saved) restores rank 0's and then reseeds torch with a seed
    drawn from it and its rank (`rank_seed`): deterministic, and apart from every other rank's stream.
    """
    from compt.distributed import rank_seed

    if isinstance(stored, dict):
        set_rng_state(stored)
        return
    set_rng_state(stored[rank] if rank < len(stored) else stored[0])
    if rank >= len(stored):
        torch.manual_seed(rank_seed(int(torch.randint(0, 2**62, ())), rank))


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


@dataclass
class Progress:
    """Where a stage is: optimizer steps done, accumulated wall clock, eval history, last losses."""

    step: int = 0
    wall_clock_s: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    losses: dict[str, float] = field(default_factory=dict)
    metrics_offset: int = 0
    eval_pending: bool = False  # the checkpoint was saved before the evaluation of its step: run it on resume
    probes: list[dict[str, Any]] = field(default_factory=list)  # stopping probes so far (`compt.train.stopping`)
    probe_steps: int = 0        # optimizer steps spent in the cooldown branches of probes that did not stop

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "wall_clock_s": self.wall_clock_s, "history": self.history,
                "losses": self.losses, "metrics_offset": self.metrics_offset, "eval_pending": self.eval_pending,
                "probes": self.probes, "probe_steps": self.probe_steps}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Progress:
        return cls(step=d["step"], wall_clock_s=d["wall_clock_s"], history=list(d["history"]),
                   losses=dict(d["losses"]), metrics_offset=d["metrics_offset"],
                   eval_pending=bool(d.get("eval_pending", False)), probes=list(d.get("probes", [])),
                   probe_steps=int(d.get("probe_steps", 0)))
