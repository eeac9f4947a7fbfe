"""How a run measures acceleration at parity: the protocol, the baseline seeds behind each target, the baselines'
probe cadence — resolved once from the run config (`resolve_parity`), read by the chain runner, the planner and
the report.

Two protocols (``parity_protocol``):

- ``baseline-curve``: each baseline trains its individual schedule (cosine); a member's target is its
  baseline's final metrics on the validation split; the baseline's cost to parity is read off its evaluation
  curve (the first held-out evaluation that reaches its own final metrics, `compt.report.cost_to_reach`).
- ``time-to-target`` (MLPerf Training / AlgoPerf style): both arms train under the same stopping rule. Every
  baseline trains on the same warmup–stable–decay schedule as a stopping member, with probes (cooldown
  branches validated on the same validation split, `compt.train.stopping`) at a fixed cadence; it never stops
  early (``until = "record"``: every probe is kept), so its whole curve of probes is known. A member's target is
  the **median over S baseline seeds** of their final validation metrics::

      target_m = median_{s ∈ seeds} v_m(baseline_s at its cap)

  and a baseline's cost to the target is the counted FLOPs at its first probe that meets it, every earlier
  probe's branch included — exactly what a stopping member pays. The baseline arm's cost of a member is the
  median of that cost over the seeds; a seed that never meets the target by its cap counts its whole schedule
  (it would have needed at least that), so the arm's cost — and the acceleration — is then a lower bound.

``target_seeds`` applies to both protocols (default 1 for ``baseline-curve``, 3 for ``time-to-target``); the run's
own ``train.seed`` is the first, the others follow it (seed + 1, seed + 2, …).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

DEFAULT_SEEDS = {"baseline-curve": 1, "time-to-target": 3}
RECORD = "record"   # a baseline's stopping rule under time-to-target: probe at the cadence, never stop


@dataclass(frozen=True)
class Parity:
    """A run's parity settings, resolved (module docstring)."""

    protocol: str                 # one of compt.config.PARITY_PROTOCOLS
    seeds: tuple[int, ...]        # the baselines' train seeds; seeds[0] is the run's train.seed
    probe_every: float = 0.0      # time-to-target: epochs between a baseline's probes (0 otherwise)

    @property
    def symmetric(self) -> bool:
        return self.protocol == "time-to-target"


def resolve_parity(cfg: Any) -> Parity:
    """The parity settings of run config `cfg` (defaults in the module docstring; a baseline's default cadence
    is a stopping member's: a quarter of its schedule)."""
    protocol = cfg.parity_protocol
    n = cfg.target_seeds if cfg.target_seeds is not None else DEFAULT_SEEDS[protocol]
    seeds = tuple(cfg.train.seed + k for k in range(n))
    every = (cfg.baseline_probe_every or cfg.individual_epochs / 4) if protocol == "time-to-target" else 0.0
    return Parity(protocol=protocol, seeds=seeds, probe_every=every)


def median_target(per_seed: list[dict[str, float]], keys: list[str]) -> dict[str, float]:
    """target_m = the median over seeds of each metric (module docstring)."""
    return {k: statistics.median(m[k] for m in per_seed) for k in keys}
