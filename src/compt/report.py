"""`compt report`: the paper-style table and plots from one or more run directories.

Everything comes from what the runs wrote (`config.toml`, `run.json`, each stage's `result.json`): training
FLOPs are the counted FLOPs of the samples each stage processed (teacher forward included), wall-clock is
the measured training time (growth included), marked indicative where its stage ran under CPU contention or
did not record its conditions (`compt.train.conditions`). Several runs of the same config (e.g. seeds)
are reported as mean ± std.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any

from compt.errors import UserError
from compt.paradigm import lower_is_better, metric_info
from compt.parity import RECORD, TIME_TO_TARGET, resolve_parity
from compt.plan import human_flops
from compt.plots import plot_accuracy_vs_compute, plot_cost_breakdown
from compt.runs import RunSummary, StageRow, load_run, metrics_for
from compt.time_to_target import time_to_target
from compt.train.conditions import contention
from compt.train.stopping import meets

WALL_MARKS = {"clean": "", "contended": " †", "not recorded": " ?"}   # after a wall-clock cell of the table

__all__ = ["RunSummary", "StageRow", "format_markdown", "load_run", "metrics_for",
           "summarise", "write_report"]


def stat(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def summarise(runs: list[RunSummary]) -> dict[str, Any]:
    """Per-member rows and family-level numbers, mean ± std over runs (JSON-ready)."""
    base = runs[0]
    n_members = min(len(r.chain) for r in runs)
    members = []
    for i in range(n_members):
        for method in ("chain", "individual"):
            rows = [r.chain[i] if method == "chain" else r.individual[i] for r in runs]
            rows = [x for x in rows if x is not None]
            if not rows:
                continue
            entry = {"model": rows[0].model, "method": method, "epochs": rows[0].epochs,
                     "flops": stat([x.flops for x in rows]),
                     "cumulative_flops": stat([x.cumulative_flops for x in rows]),
                     "wall_s": stat([x.wall_s for x in rows]), "wall_status": combined_status(rows),
                     "wall_notes": _wall_notes(rows)}
            for key, _ in metrics_for(base.cfg):
                vals = [x.metrics[key] for x in rows if key in x.metrics]
                if vals:
                    entry[key] = stat(vals)
            stops = [x.stopping for x in rows if x.stopping and x.stopping["until"] != RECORD]   # records never stop
            if stops and len(stops) == len(rows):
                entry["stopping"] = _stopping_entry(stops, rows)
            diag = [x.diagnostics for x in rows if x.diagnostics]
            if len(diag) == len(rows):
                entry["diagnostics"] = {k: stat([d[k] for d in diag]) for k in diag[0] if all(k in d for d in diag)}
            members.append(entry)
    metrics = metrics_for(base.cfg)
    _add_deltas(members, metrics)
    return {"name": base.name, "runs": [r.run_dir for r in runs], "members": members,
            "family": _family(runs, n_members), "metrics": [list(m) for m in metrics]}


def _stopping_entry(stops: list[dict[str, Any]], rows: list[StageRow]) -> dict[str, Any]:
    """A stopping member over runs: how many reached the target, the epochs and FLOPs where each stopped, the
    target and the best validation metrics of the runs that did not reach it."""
    keys = list(stops[0]["target"])
    missed = [s for s in stops if not s["reached"]]
    best = {k: stat([_best(s["probes"], k) for s in missed]) for k in keys} if missed else {}
    return {"reached": sum(s["reached"] for s in stops), "runs": len(stops), "until": stops[0]["until"],
            "target": {k: stat([s["target"][k] for s in stops]) for k in keys},
            "epoch": stat([x.epochs for x in rows]), "probes": stat([float(len(s["probes"])) for s in stops]),
            "probe_steps": stat([float(s["probe_steps"]) for s in stops]), "best_missed": best}


def _best(probes: list[dict[str, Any]], key: str) -> float:
    values = [p[key] for p in probes if key in p]
    return min(values) if lower_is_better(key) else max(values)


def cost_to_reach(history: list[dict[str, Any]], target: dict[str, float]) -> float | None:
    """Counted FLOPs at the first evaluation of `history` that meets every value of `target` (None: none does) —
    a baseline's cost to reach its own final quality, read off its evaluation curve."""
    lower = [k for k in target if lower_is_better(k)]
    return next((h["flops"] for h in history if meets(h, target, lower)), None)


def combined_status(rows: list[StageRow]) -> str:
    """contended if any run's stage was, else not recorded if any lacks conditions, else clean."""
    states = {r.wall_status() for r in rows}
    return next(s for s in ("contended", "not recorded", "clean") if s in states)


def _wall_notes(rows: list[StageRow]) -> list[str]:
    """Why each contended measurement is indicative (one line per run that was contended)."""
    notes = [(i, "; ".join(contention(r.conditions))) for i, r in enumerate(rows) if r.wall_status() == "contended"]
    return [f"run {i + 1}: {n}" if len(rows) > 1 else n for i, n in notes]


def wall_caveat(rows: list[StageRow]) -> str | None:
    """None when every stage behind a wall-clock figure was measured clean, else why the figure is indicative."""
    contended = list(dict.fromkeys(r.label for r in rows if r.wall_status() == "contended"))
    unknown = list(dict.fromkeys(r.label for r in rows if r.wall_status() == "not recorded"))
    parts = ([f"{len(contended)} of the {len({r.label for r in rows})} stage results it uses were measured "
              f"under CPU contention ({', '.join(contended)})"] if contended else [])
    parts += [f"conditions not recorded for {', '.join(unknown)}"] if unknown else []
    return "; ".join(parts) or None


def _add_deltas(members: list[dict[str, Any]], metrics: tuple[tuple[str, str], ...]) -> None:
    ind = {m["model"]: m for m in members if m["method"] == "individual"}
    for m in members:
        if m["method"] == "chain" and m["model"] in ind:
            for key, _ in metrics:
                if key in m and key in ind[m["model"]]:
                    m[f"delta_{key}"] = m[key]["mean"] - ind[m["model"]][key]["mean"]


def _family(runs: list[RunSummary], n_members: int) -> dict[str, Any]:
    complete = n_members == len(runs[0].cfg.chain)
    # an unfinished chain is compared with its finished members' baselines only (the same members on both sides)
    chain = [sum(x.flops for x in r.chain[:n_members]) for r in runs]
    per_member = [r.individual_flops()[:n_members] for r in runs]
    indiv = [sum(f) for f in per_member]
    largest = [max(f) for f in per_member]   # the last member of an up-chain, member 1 of a down-chain
    biggest = max(range(n_members), key=lambda i: per_member[0][i])
    out: dict[str, Any] = {"complete": complete, "members": n_members, "chain_flops": stat(chain),
                           "individual_flops": stat(indiv),
                           "chain_pct_of_largest": stat([100 * c / lg for c, lg in zip(chain, largest)]),
                           "acceleration_flops": stat([i / c for i, c in zip(indiv, chain)]),
                           "baselines_counted": all(all(x is not None for x in r.individual[:n_members])
                                                    for r in runs)}
    if (parity := _family_parity(runs, n_members)) is not None:
        out["parity"] = parity
    if runs[0].cfg.chain[0].init:   # member 1's stage is its continued training; its from-scratch cost is added
        first = [f[0] for f in per_member]
        out["init"] = runs[0].cfg.chain[0].init
        out["acceleration_flops_counting_init"] = stat([i / (c + f1) for i, c, f1 in zip(indiv, chain, first)])
    if out["baselines_counted"]:
        walls = [(sum(x.wall_s for x in r.individual[:n_members]), sum(x.wall_s for x in r.chain[:n_members]))
                 for r in runs]
        out["acceleration_wall"] = stat([i / c for i, c in walls])
        out["chain_wall_pct_of_largest"] = stat([100 * c / r.individual[biggest].wall_s
                                                 for r, (_, c) in zip(runs, walls)])
        used = [x for r in runs for x in (*r.chain[:n_members], *r.individual[:n_members])]
        out["acceleration_wall_status"], out["acceleration_wall_caveat"] = combined_status(used), wall_caveat(used)
        out["chain_wall_pct_caveat"] = wall_caveat([x for r in runs
                                                    for x in (*r.chain[:n_members], r.individual[biggest])])
    return out


def _family_parity(runs: list[RunSummary], n_members: int) -> dict[str, Any] | None:
    """The family's acceleration to its targets over runs (`_parity`): whether every member reached its target in
    every run, whether every run is at parity and, when all reached, the acceleration — and, member 1 starting from
    a checkpoint, the same with member 1's baseline cost added to its own training."""
    parity = [_parity(r, n_members) for r in runs]
    if all(p is None for p in parity):
        return None
    out: dict[str, Any] = {"reached_all": all(p is not None and p["reached_all"] for p in parity),
                           "at_parity": all(p is not None and p["at_parity"] for p in parity),
                           "protocol": resolve_parity(runs[0].cfg).protocol,
                           "lower_bound": any(p is not None and p.get("lower_bound") for p in parity)}
    if all(p is not None and "members" in p for p in parity):
        out["arms"] = _arms(parity)
    if out["reached_all"]:
        out["acceleration_flops"] = stat([p["baseline_flops"] / p["chain_flops"] for p in parity])
    if out["reached_all"] and all(p.get("baseline_wall") is not None for p in parity):
        used = [x for r in runs for x in [*r.chain[:n_members], *(b for seeds in r.baseline_seeds[:n_members]
                                                                   for b in seeds)]]
        out["acceleration_wall"] = stat([p["baseline_wall"] / p["chain_wall"] for p in parity])
        out["acceleration_wall_caveat"] = wall_caveat(used)
    if out["reached_all"] and runs[0].cfg.chain[0].init:
        out["acceleration_flops_counting_init"] = stat(   # member 1's from-scratch cost added to its stage's
            [p["baseline_flops"] / (p["chain_flops"] + p["member1_flops"]) for p in parity])
    return out


def _parity(run: RunSummary, n_members: int) -> dict[str, Any] | None:
    """The family's acceleration to its grown members' targets, of one run whose grown members stop at targets and
    whose baselines ran (None without stopping members): Σ each baseline's cost to first reach its goal
    (`cost_to_reach`; its full cost when it never does) over the chain's cost to obtain every member (each stopping
    member's cost includes its probes). At parity (`at_parity`) every baseline's goal is its own final metrics;
    otherwise a grown member's baseline's goal is that member's target (member 1's: its own final metrics). Under
    the time-to-target protocol both arms' costs come from their probes (`_time_to_target`)."""
    metrics = [k for k, _ in metrics_for(run.cfg)]
    if resolve_parity(run.cfg).symmetric:
        return _time_to_target(run, n_members, metrics)
    grown = run.chain[1:n_members]
    baselines = run.individual[:n_members]
    if not grown or not all(x.stopping for x in grown) or None in baselines:
        return None
    finals = [{k: b.metrics[k] for k in metrics if k in b.metrics} for b in baselines]
    at_parity = all(targets_match(x.stopping["target"], b.validation or b.metrics, metrics)
                    for x, b in zip(grown, baselines[1:]))
    goals = finals if at_parity else [finals[0], *(x.stopping["target"] for x in grown)]
    costs = [cost_to_reach(b.history, goal) or b.flops for b, goal in zip(baselines, goals)]
    return {"reached_all": all(x.stopping["reached"] for x in grown), "at_parity": at_parity,
            "baseline_flops": sum(costs), "member1_flops": costs[0],
            "chain_flops": sum(x.flops for x in run.chain[:n_members])}


def _time_to_target(run: RunSummary, n_members: int, metrics: list[str]) -> dict[str, Any] | None:
    """`_parity` under the time-to-target protocol (`compt.time_to_target`): at parity when every grown
    member's target asks at least the median of its baselines' final validation metrics."""
    out = time_to_target(run, n_members, metrics, [k for k in metrics if lower_is_better(k)])
    if out is None:
        return None
    members = out["members"]
    at_parity = all(targets_match(m["target"], m["baseline_final"], metrics) for m in members[1:])
    return {**out, "at_parity": at_parity, "member1_flops": members[0]["baseline_cost"]}


def targets_match(target: dict[str, float], baseline: dict[str, float], metrics: list[str]) -> bool:
    """Whether a member's `target` asks at least its baseline's quality: a value for each headline metric of
    `metrics` the baseline has, each at least the baseline's (at most, where lower is better). `baseline`: its
    metrics on the split the target is judged on (validation) when recorded, else its held-out ones."""
    have = [k for k in metrics if k in baseline]
    return bool(have) and all(k in target and (target[k] <= baseline[k] if lower_is_better(k)
                                               else target[k] >= baseline[k]) for k in have)


def parity_name(parity: dict[str, Any]) -> str:
    """What the family's acceleration to its targets is called: "acceleration at parity" only when every grown
    member's target is at least its baseline's metrics (`targets_match`), else "acceleration to the given target"."""
    return "acceleration at parity" if parity.get("at_parity") else "acceleration to the given target"


TIME_TO_TARGET_TEXT = ("time-to-target protocol: both arms under the same stopping rule, each baseline's cost its "
                       "first probe that meets the target, probes counted")


def _parity_lines(f: dict[str, Any]) -> list[str]:
    """Both arms' cost to each target (time-to-target), the family's acceleration to its targets with the protocol
    and what its baselines' costs count, and — member 1 starting from a checkpoint — the same counting member 1's
    baseline cost."""
    parity = f.get("parity")
    if not parity:
        return []
    name = parity_name(parity)
    lines = _arm_lines(parity.get("arms", []))
    if not parity["reached_all"]:
        return [*lines, f"- family {name}: not defined — a member did not reach its target by the cap"]
    goal = "its own final metrics" if parity.get("at_parity") else \
        "its member's target (member 1's: its own final metrics); the targets ask less than the baselines reached"
    how = TIME_TO_TARGET_TEXT if parity.get("protocol") == TIME_TO_TARGET else \
        f"baseline-curve protocol: each baseline's cost, read off its evaluation curve, to first reach {goal}"
    bound = "≥ " if parity.get("lower_bound") else ""
    lines.append(f"- family {name} (FLOPs; {how}): {bound}{_fmt(parity['acceleration_flops'], digits=2)}×")
    if "acceleration_wall" in parity:
        lines.append(f"- family {name} (training wall-clock, both arms to the same probes): {bound}"
                     f"{_fmt(parity['acceleration_wall'], digits=2)}×" + _wall_note(parity))
    if "acceleration_flops_counting_init" in parity:
        lines.append(f"- member 1 starts from an existing checkpoint ({f['init']}): the {name} above counts it at its "
                     f"own training cost only; counting its baseline's cost, it is "
                     f"{_fmt(parity['acceleration_flops_counting_init'], digits=2)}×")
    return lines


def _wall_note(parity: dict[str, Any]) -> str:
    """', measured (…)' when every stage behind a wall-clock figure at parity was clean, else why it is
    indicative."""
    caveat = parity.get("acceleration_wall_caveat")
    return (" — measured: same machine, same run, no stage contended" if caveat is None else
            f" — indicative only, not a measurement: {caveat}")


def _arm_lines(arms: list[dict[str, Any]]) -> list[str]:
    """Time-to-target: each member's cost to its target in both arms."""
    if not arms:
        return []
    lines = ["- cost to the target, both arms (targets: the median of the baseline seeds' final validation metrics "
             "unless given; baseline arm: the median over seeds, a seed that never met the target counted at its "
             "whole schedule, ≥):"]
    for a in arms:
        short = a["seeds_reached"] < a["seeds"]
        lines.append(f"  - {a['model']}: chain {human_flops(a['chain']['mean'])}, baseline "
                     f"{'≥ ' if short else ''}{human_flops(a['baseline']['mean'])} ({a['seeds_reached']} of "
                     f"{a['seeds']} baseline seeds reached it)")
    return lines


def _arms(parity: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per member, both arms' cost to its target under time-to-target (`compt.time_to_target`) over runs:
    the chain's, the baseline arm's (median over seeds, a seed that never met it at its whole schedule) and how many
    baseline seeds reached it."""
    out = []
    for i, first in enumerate(parity[0]["members"]):
        ms = [p["members"][i] for p in parity]
        out.append({"model": first["model"], "chain": stat([m["chain_cost"] for m in ms]),
                    "baseline": stat([m["baseline_cost"] for m in ms]),
                    "seeds_reached": sum(c is not None for m in ms for c in m["baseline_costs"]),
                    "seeds": sum(len(m["baseline_costs"]) for m in ms)})
    return out


def _fmt(stat: dict[str, float] | None, scale: float = 1.0, digits: int = 1) -> str:
    if not stat:
        return "—"
    mean = stat["mean"] * scale
    return f"{mean:.{digits}f} ± {stat['std'] * scale:.{digits}f}" if stat["n"] > 1 else f"{mean:.{digits}f}"


def format_markdown(summary: dict[str, Any]) -> str:
    """The paper-style table (Markdown) plus family-level lines."""
    metrics = [(k, label) for k, label in summary["metrics"]
               if any(k in m for m in summary["members"])]  # recorded ones
    digits = metric_info(summary["metrics"][0][0]).digits
    lines = ["| member | method | epochs | train FLOPs | cumulative | wall-clock (s) | "
             + "".join(f"{label} | Δ | " for _, label in metrics).rstrip(),
             "|---|---|---:|---:|---:|---:|" + "---:|---:|" * len(metrics)]
    for m in summary["members"]:
        mark = WALL_MARKS.get(m.get("wall_status", "not recorded"), "")
        cells = [f"{_fmt(m.get(k), digits=digits)} | {m[f'delta_{k}']:+.{digits}f}" if f"delta_{k}" in m
                 else f"{_fmt(m.get(k), digits=digits)} | "
                 for k, _ in metrics]
        lines.append(f"| {m['model']} | {m['method']} | {m['epochs']:g} | {human_flops(m['flops']['mean'])} | "
                     f"{human_flops(m['cumulative_flops']['mean'])} | {_fmt(m['wall_s'])}{mark} | "
                     + "".join(f"{c} | " for c in cells).rstrip())
    lines += _wall_footnotes(summary["members"])
    f = summary["family"]
    lines += ["", f"- chain cost: {human_flops(f['chain_flops']['mean'])} = "
                  f"{_fmt(f['chain_pct_of_largest'])} % of training the largest member alone"
                  + ("" if f["baselines_counted"] else " (individual costs from the planner: baselines not run)"),
              f"- family acceleration (FLOPs): {_fmt(f['acceleration_flops'], digits=2)}×"]
    if "acceleration_flops_counting_init" in f:
        lines.append(f"- member 1 starts from an existing checkpoint ({f['init']}); counting its training from "
                     f"scratch (its baseline's cost) too, the family acceleration (FLOPs) is "
                     f"{_fmt(f['acceleration_flops_counting_init'], digits=2)}×")
    if "acceleration_wall" in f:
        lines += _wall_lines(f)
    if not f["complete"]:
        lines.append(f"- the chain is not finished: family numbers compare its {f['members']} "
                     f"finished members with the same members' baselines")
    return "\n".join(lines + _stopping_lines(summary) + _distance_lines(summary["members"]))


def _stopping_lines(summary: dict[str, Any]) -> list[str]:
    """Per stopping member: "reached at E epochs (X FLOPs)" or "not reached by the cap (best …)"; the family's
    acceleration to the targets (`_parity_lines`)."""
    stopping = [m for m in summary["members"] if m.get("stopping")]
    if not stopping:
        return []
    lines = ["", "Training until the target (decisions on the validation split; the table's metrics are the "
                 "held-out split's):"]
    for m in stopping:
        s = m["stopping"]
        target = ", ".join(f"{metric_info(k).label} {_fmt(v, digits=metric_info(k).digits)}"
                           for k, v in s["target"].items())
        runs = f" in {s['reached']} of {s['runs']} runs" if s["runs"] > 1 else ""
        probes = _fmt(s["probes"], digits=0)
        where = f"at {_fmt(s['epoch'])} epochs ({human_flops(m['flops']['mean'])}, {probes} " \
                f"probe{'' if probes == '1' else 's'})"
        if s["reached"] == s["runs"]:
            lines.append(f"- {m['model']}: reached{runs} {where}; target {target}")
        else:
            best = ", ".join(f"{metric_info(k).label} {_fmt(v, digits=metric_info(k).digits)}"
                             for k, v in s["best_missed"].items())
            lines.append(f"- {m['model']}: not reached by the cap{runs} (best on validation: {best}); stopped "
                         f"{where}; target {target}")
    return lines + _parity_lines(summary["family"])


def closing_line(summary: dict[str, Any]) -> str:
    """One line a newcomer can read, computed from the summary's table: the family acceleration (counted FLOPs,
    and wall-clock when the baselines ran) and, per grown member, its change against its baseline on each
    headline metric, with how many grown members reach their baselines on every metric."""
    f, metrics = summary["family"], [(k, label) for k, label in summary["metrics"]]
    speed = f"family acceleration {f['acceleration_flops']['mean']:.2f}× in counted FLOPs"
    if "acceleration_wall" in f:
        speed += f" ({f['acceleration_wall']['mean']:.2f}× wall-clock)"
    chain = [m for m in summary["members"] if m["method"] == "chain"]
    grown = [m for m in chain[1:] if any(f"delta_{k}" in m for k, _ in metrics)]   # chain[0] trains from scratch
    if not grown:
        return f"what this shows: {speed}; no grown member has a baseline to compare with"
    parts, reached = [], 0
    for m in grown:
        deltas = [(k, label, m[f"delta_{k}"]) for k, label in metrics if f"delta_{k}" in m]
        ok = all(d <= 0 if lower_is_better(k) else d >= 0 for k, _, d in deltas)
        reached += ok
        digits = metric_info(deltas[0][0]).digits
        parts.append(f"{m['model']} " + ", ".join(f"{d:+.{digits}f} {label}" for _, label, d in deltas))
    line = (f"what this shows: {speed}; grown members against their baselines: {'; '.join(parts)} — "
            f"{reached} of {len(grown)} reach their baseline on every metric")
    return line + _stopping_clause(summary, chain[1:])


def _stopping_clause(summary: dict[str, Any], grown: list[dict[str, Any]]) -> str:
    """The closing line's part on members that train until a target: where each stopped, and the family's
    acceleration to the targets, named by `parity_name` (or that there is none)."""
    stops = [m for m in grown if m.get("stopping")]
    if not stops:
        return ""
    where = "; ".join(f"{m['model']} {'reached' if m['stopping']['reached'] == m['stopping']['runs'] else 'missed'} "
                      f"its target at {m['stopping']['epoch']['mean']:.3g} epochs "
                      f"({human_flops(m['flops']['mean'])})" for m in stops)
    parity = summary["family"].get("parity") or {}
    name = parity_name(parity)
    protocol = f" ({TIME_TO_TARGET})" if parity.get("protocol") == TIME_TO_TARGET else ""
    bound = "≥ " if parity.get("lower_bound") else ""
    speed = f"{name}{protocol} {bound}{parity['acceleration_flops']['mean']:.2f}× in counted FLOPs" \
        if parity.get("reached_all") else f"no {name} (a member missed its target by the cap)"
    if "acceleration_flops_counting_init" in parity:
        speed += f" ({parity['acceleration_flops_counting_init']['mean']:.2f}× counting member 1's baseline)"
    return f"; trained until the target: {where} — {speed}"


def _distance_lines(members: list[dict[str, Any]]) -> list[str]:
    """The grown members' distance from their parents (`compt.diagnostics`): linear CKA of each held-out
    representation with the parent's at the start and end of the stage, and the relative update."""
    grown = [m for m in members if m.get("diagnostics")]
    if not grown:
        return []
    names = sorted({k[len("cka_"):-len("_start")] for m in grown for k in m["diagnostics"]
                    if k.startswith("cka_") and k.endswith("_start")})
    head = ["member", *[f"CKA {n} with parent: start → end" for n in names], "‖Δθ‖ / ‖θ₀‖"]
    lines = ["", "Distance from the parent (linear CKA of held-out representations; 1 = the parent's, up to "
                 "rotation and scale):", "", "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for m in grown:
        d = m["diagnostics"]
        cells = [f"{_fmt(d.get(f'cka_{n}_start'), digits=3)} → {_fmt(d.get(f'cka_{n}_end'), digits=3)}"
                 for n in names]
        lines.append("| " + " | ".join([m["model"], *cells, _fmt(d.get("update_norm"), digits=3)]) + " |")
    return lines


def _wall_footnotes(members: list[dict[str, Any]]) -> list[str]:
    """Footnotes under the table for wall-clock cells that are not clean measurements."""
    lines = [f"- {WALL_MARKS['contended'].strip()} {m['model']} {m['method']}: wall-clock measured under "
             f"contention, indicative only — {'; '.join(m['wall_notes'])}"
             for m in members if m.get("wall_status") == "contended"]
    if any(m.get("wall_status", "not recorded") == "not recorded" for m in members):
        lines.append(f"- {WALL_MARKS['not recorded'].strip()} wall-clock conditions not recorded (stage run "
                     "before compt recorded them): whether other work shared the machine is unknown")
    return ["", *lines] if lines else []


def _wall_lines(f: dict[str, Any]) -> list[str]:
    """The family wall-clock figures: a measurement only when every stage behind them was clean."""
    accel, pct = f"{_fmt(f['acceleration_wall'], digits=2)}×", f"{_fmt(f['chain_wall_pct_of_largest'])} %"
    if f.get("acceleration_wall_caveat", "unknown") is None:
        head = f"- family acceleration (wall-clock, measured: same machine, same run, no stage contended): {accel}"
    else:
        head = (f"- family acceleration (wall-clock): {accel} — indicative only, not a measurement: "
                f"{f.get('acceleration_wall_caveat') or 'conditions not recorded'}")
    pct_note = "" if f.get("chain_wall_pct_caveat", "unknown") is None else " (indicative only, as above)"
    return [head, f"- chain wall-clock = {pct} of the largest member's individual run{pct_note}"]


def write_report(run_dirs: list[str | Path], out_dir: str | Path | None = None) -> tuple[Path, str]:
    """Write report.md, report.json and plots; returns (output folder, Markdown text)."""
    runs = [load_run(d) for d in run_dirs]
    names = {r.name for r in runs}
    if len(names) > 1:
        raise UserError(f"runs of different configs cannot be averaged: {', '.join(sorted(names))}")
    out = Path(out_dir) if out_dir else Path(run_dirs[0]) / "report"
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(runs)
    plots = [p for p in (plot_accuracy_vs_compute(runs, out / "accuracy_vs_compute.png"),
                         plot_cost_breakdown(runs[0], out / "cost_breakdown.png")) if p is not None]
    md = f"# {summary['name']}\n\nRuns: {', '.join(summary['runs'])}\n\n{format_markdown(summary)}\n"
    md += "".join(f"\n![{p.stem}]({p.name})\n" for p in plots)
    md += runs[0].cfg.paradigm.report_sections([Path(d) for d in run_dirs], out)
    (out / "report.md").write_text(md)
    # paths relative to the report's folder: a copied or committed report names no path of the machine
    relative = {"runs": [os.path.relpath(d, out) for d in summary["runs"]], "plots": [p.name for p in plots]}
    (out / "report.json").write_text(json.dumps({**summary, **relative}, indent=2))
    return out, md
