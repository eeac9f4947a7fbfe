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

import math
import statistics
from dataclasses import dataclass
from typing import Any

from compt.errors import UserError, unknown_name

TIME_TO_TARGET = "time-to-target"
PROTOCOLS = ("baseline-curve", TIME_TO_TARGET)

DEFAULT_SEEDS = {"baseline-curve": 1, TIME_TO_TARGET: 3}
RECORD = "record"   # a baseline's stopping rule under time-to-target: probe at the cadence, never stop


@dataclass(frozen=True)
class Parity:
    """A run's parity settings, resolved (module docstring)."""

    protocol: str                 # one of PROTOCOLS
    seeds: tuple[int, ...]        # the baselines' train seeds; seeds[0] is the run's train.seed
    probe_every: float = 0.0      # time-to-target: epochs between a baseline's probes (0 otherwise)

    @property
    def symmetric(self) -> bool:
        return self.protocol == TIME_TO_TARGET


def resolve_parity(cfg: Any) -> Parity:
    """The parity settings of run config `cfg` (defaults in the module docstring; a baseline's default cadence
    is a stopping member's: a quarter of its schedule)."""
    protocol = cfg.parity_protocol
    n = cfg.target_seeds if cfg.target_seeds is not None else DEFAULT_SEEDS[protocol]
    seeds = tuple(cfg.train.seed + k for k in range(n))
    every = (cfg.baseline_probe_every or cfg.individual_epochs / 4) if protocol == TIME_TO_TARGET else 0.0
    return Parity(protocol=protocol, seeds=seeds, probe_every=every)


def median_target(per_seed: list[dict[str, float]], keys: list[str]) -> dict[str, float]:
    """target_m = the median over seeds of each metric (module docstring)."""
    return {k: statistics.median(m[k] for m in per_seed) for k in keys}


def validate_parity(cfg: Any, max_probes: int) -> None:
    """`parity_protocol`, `target_seeds`, `baseline_probe_every` (`compt.parity`): a known protocol; more than one
    seed or a baseline cadence only where baselines train; time-to-target with at least 2 seeds and at most
    `max_probes` probes per baseline (`compt.config.validate` calls it with the run config)."""
    if cfg.parity_protocol not in PROTOCOLS:
        raise unknown_name("parity_protocol", cfg.parity_protocol, PROTOCOLS)
    symmetric = cfg.parity_protocol == TIME_TO_TARGET
    if symmetric and not any(m.until or m.target for m in cfg.chain):
        raise UserError("parity_protocol = \"time-to-target\" measures members trained until a target: set until = "
                        "\"baseline\" (or a target) on the grown members")
    if symmetric and not cfg.baselines:
        raise UserError("parity_protocol = \"time-to-target\" trains the baselines under the stopping rule: set "
                        "baselines = true")
    if cfg.target_seeds is not None and not (2 if symmetric else 1) <= cfg.target_seeds <= 100:
        least = "2 (time-to-target: the median of at least 2 baseline seeds)" if symmetric else "1"
        raise UserError(f"target_seeds must be at least {least} and at most 100, got {cfg.target_seeds}")
    if cfg.target_seeds not in (None, 1) and not cfg.baselines:
        raise UserError("target_seeds trains every baseline on that many seeds: set baselines = true")
    every = cfg.baseline_probe_every
    if every is not None and not symmetric:
        raise UserError("baseline_probe_every sets the baselines' probes under parity_protocol = "
                        "\"time-to-target\"; set that protocol or remove it")
    if every is not None and not (math.isfinite(every) and 0 < every <= cfg.individual_epochs):
        raise UserError(f"baseline_probe_every must be in (0, baseline_epochs = {cfg.individual_epochs:g}], got "
                        f"{every}")
    if symmetric and cfg.individual_epochs / (every or cfg.individual_epochs / 4) > max_probes:
        raise UserError(f"baseline_probe_every = {every:g} gives more than {max_probes} probes per baseline")
