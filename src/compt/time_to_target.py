"""Both arms' cost to their targets under the time-to-target protocol, read from a run's records: the protocol
and its math are `compt.parity`'s; `compt.report` names and prints the figures."""

from __future__ import annotations

import statistics
from typing import Any

from compt.parity import TIME_TO_TARGET, median_target
from compt.train.stopping import meets


def first_meeting_probe(probes: list[dict[str, Any]], target: dict[str, float],
                        lower_is_better: list[str]) -> dict[str, Any] | None:
    """The first of a recorded stage's probes whose validation metrics meet `target` (None: none does)."""
    return next((p for p in probes if meets(p, target, lower_is_better)), None)


def time_to_target(run: Any, n_members: int, keys: list[str], lower_is_better: list[str]) -> dict[str, Any] | None:
    """Both arms' cost to the targets of one run under the time-to-target protocol (`compt.parity`), or None
    when a grown member does not stop at a target or a baseline seed has not finished. Per member: the target
    (a grown member's own, else the median of its baselines' final validation metrics, ``baseline_final``), each
    seed's cost to it (None: not reached by its cap), the baseline arm's cost — the median over seeds, a seed that
    never met the target counted at its whole schedule (``censored``: the arm's cost, and so the acceleration, is
    then a lower bound) — and the chain's (its stage's counted FLOPs, probes included); the same in training wall
    clock (``baseline_wall``: the probes' ``wall_s``, None where a probe predates it; ``chain_wall``: the stage's)."""
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
        met = [first_meeting_probe(r.stopping["probes"], target, lower_is_better) for r in seeds]
        costs = [_probe_flops(p) for p in met]
        members.append({"model": run.chain[i].model, "target": target, "baseline_final": final,
                        "baseline_costs": costs, "censored": None in costs,
                        "baseline_cost": statistics.median(r.flops if c is None else c for c, r in zip(costs, seeds)),
                        "chain_cost": run.chain[i].flops,
                        "baseline_wall": _arm_wall(met, seeds), "chain_wall": run.chain[i].wall_s})
    return {"protocol": TIME_TO_TARGET, "seeds": len(rows[0]), "members": members,
            "reached_all": all(x.stopping["reached"] for x in grown),
            "lower_bound": any(m["censored"] for m in members),
            "baseline_flops": sum(m["baseline_cost"] for m in members),
            "chain_flops": sum(m["chain_cost"] for m in members),
            "baseline_wall": _total(m["baseline_wall"] for m in members),
            "chain_wall": sum(m["chain_wall"] for m in members)}


def _probe_flops(probe: dict[str, Any] | None) -> float | None:
    return None if probe is None else float(probe["flops"])


def _arm_wall(met: list[dict[str, Any] | None], seeds: list[Any]) -> float | None:
    """The baseline arm's wall clock to a target: the median over seeds of the stage's training wall clock at its
    first probe that meets it (its whole stage's where none does), None when a probe did not record it."""
    walls = [r.wall_s if p is None else p.get("wall_s") for p, r in zip(met, seeds)]
    return None if None in walls else statistics.median(walls)


def _total(walls: Any) -> float | None:
    walls = list(walls)
    return None if None in walls else sum(walls)
