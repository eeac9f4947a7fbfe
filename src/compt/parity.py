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

PROTOCOLS = ("baseline-curve", "time-to-target")
DEFAULT_SEEDS = {"baseline-curve": 1, "time-to-target": 3}
RECORD = "record"   # a baseline's stopping rule under time-to-target: probe at the cadence, never stop


@dataclass(frozen=True)
class Parity:
    """A run's parity settings, resolved (module docstring)."""

    protocol: str                 # one of PROTOCOLS
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


def first_meeting_probe(probes: list[dict[str, Any]], target: dict[str, float],
                        lower_is_better: list[str]) -> dict[str, Any] | None:
    """The first of a recorded stage's probes whose validation metrics meet `target` (None: none does)."""
    from compt.train.stopping import meets

    return next((p for p in probes if meets(p, target, lower_is_better)), None)


def time_to_target(run: Any, n_members: int, keys: list[str], lower_is_better: list[str]) -> dict[str, Any] | None:
    """Both arms' cost to the targets of one run under the time-to-target protocol (module docstring), or None
    when a grown member does not stop at a target or a baseline seed has not finished. Per member: the target
    (a grown member's own, else the median of its baselines' final validation metrics, ``baseline_final``), each
    seed's cost to it (None: not reached by its cap), the baseline arm's cost — the median over seeds, a seed that
    never met the target counted at its whole schedule (``censored``: the arm's cost, and so the acceleration, is
    then a lower bound) — and the chain's (its stage's counted FLOPs, probes included)."""
    grown = run.chain[1:n_members]
    rows = run.baseline_seeds[:n_members]
    if not grown or not all(x.stopping for x in grown) or any(r is None for seeds in rows for r in seeds):
        return None
    members = []
    keys = [k for k in keys if all(k in r.stopping["probes"][-1] for seeds in rows for r in seeds)]   # measured
    for i, seeds in enumerate(rows):
        own = run.chain[i].stopping.get("target") if i else None
        final = median_target([r.stopping["probes"][-1] for r in seeds], keys)
        target = dict(own) if own else final
        costs = [_probe_flops(first_meeting_probe(r.stopping["probes"], target, lower_is_better)) for r in seeds]
        members.append({"model": run.chain[i].model, "target": target, "baseline_final": final,
                        "baseline_costs": costs, "censored": None in costs,
                        "baseline_cost": statistics.median(r.flops if c is None else c for c, r in zip(costs, seeds)),
                        "chain_cost": run.chain[i].flops})
    return {"protocol": "time-to-target", "seeds": len(rows[0]), "members": members,
            "reached_all": all(x.stopping["reached"] for x in grown),
            "lower_bound": any(m["censored"] for m in members),
            "baseline_flops": sum(m["baseline_cost"] for m in members),
            "chain_flops": sum(m["chain_cost"] for m in members)}


def _probe_flops(probe: dict[str, Any] | None) -> float | None:
    return None if probe is None else float(probe["flops"])
