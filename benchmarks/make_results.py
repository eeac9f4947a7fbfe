"""Generate docs/results.md from the experiment runs under runs/bench (see benchmarks/experiments.py).

    python benchmarks/make_results.py [--runs runs/bench] [--out docs/results.md]

Tables come from `compt.report.summarise` over each variant's seed runs (mean ± std); the written analysis
is `benchmarks/analysis.md`, included verbatim after the tables' header.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from compt.chain import baseline_dir, plan_stages
from compt.paradigm import lower_is_better, metric_info
from compt.plan import human_flops
from compt.report import (
    WALL_MARKS,
    RunSummary,
    combined_status,
    stat,
    summarise,
    write_report,
)
from compt.runs import metrics_for

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from experiments import EXPERIMENTS, copied_stages  # noqa: E402
from results_data import METRICS, machine  # noqa: E402
from results_data import complete_runs as _complete_runs  # noqa: E402
from results_data import pm as _pm  # noqa: E402
from results_data import rel as _rel  # noqa: E402
from roads_section import roads_section  # noqa: E402
from study_sections import (  # noqa: E402
    finetune_section,
    lm_eval_section,
    lm_parity_section,
    parity_real_section,
    parity_section,  # noqa: E402
    parity_ttt_section,
    vit_parity_section,
)

# the order docs/results.md reads in
ORDER = ("main", "paper_protocol", "parity", "parity_ttt", "parity_real", "beyond_paper", "paper_regime", "fashion",
         "fashion_wide", "openclipart", "siglip", "lm", "lm_parity", "vit_parity", "roads", "transfer", "growth_op",
         "distill_loss", "alpha", "stage_lr", "epochs", "family_size", "prepend")
CONVERGENCE = ("main", "paper_protocol", "paper_regime", "lm")   # show how far their baselines still moved
PARTIAL_OK = ("paper_protocol", "parity", "beyond_paper")   # long experiments shown with the stages finished so far
PAYOFF = ("saturation", "paper_protocol")   # runs with grown members at the paper's fractions of the baseline
PLOTTED = ("main", "paper_protocol", "paper_regime", "family_size", "fashion", "fashion_wide",
           "openclipart", "siglip", "lm")   # experiments with plots
PAIRED = {"beyond_paper": "paper_protocol"}   # recipes compared seed by seed with this experiment's run of their family
EQUAL_LOSS = ("lm",)   # language-model experiments: compute at equal held-out loss
# the evidence target: a 4-member CLIP family at >= 4x counted FLOPs (>= 3.5x wall-clock, clean, same runs), every
# grown member within 1 point of its baseline or above on every metric, mean of >= 2 seeds
TARGET = {"members": 4, "flops": 4.0, "wall": 3.5, "tolerance": 1.0, "seeds": 2}
COPIED = " ‡"   # after a wall-clock cell, besides WALL_MARKS: some stage behind it was copied from another run


def variant_table(rows: list[tuple[str, dict]]) -> str:
    """One row per (variant, member): chain accuracy (LMs: held-out loss), Δ to the individual baseline, and
    family-level cost."""
    metrics = [tuple(m) for m in rows[0][1].get("metrics", METRICS)]
    head = ["variant", "member", *[f"chain {label}" for _, label in metrics], *[f"Δ {label}" for _, label in metrics],
            f"individual {metrics[0][1]}", "chain FLOPs (% of largest alone)", "accel. FLOPs", "accel. wall-clock",
            "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    digits = metric_info(metrics[0][0]).digits
    for name, s in rows:
        ind = {m["model"]: m for m in s["members"] if m["method"] == "individual"}
        fam = s["family"]
        for m in (m for m in s["members"] if m["method"] == "chain"):
            deltas = [f"{m[f'delta_{k}']:+.{digits}f}" if f"delta_{k}" in m else "—" for k, _ in metrics]
            lines.append("| " + " | ".join([
                name, m["model"], *[_pm(m.get(k), digits) for k, _ in metrics], *deltas,
                _pm(ind.get(m["model"], {}).get(metrics[0][0]), digits),
                f"{human_flops(fam['chain_flops']['mean'])} ({_pm(fam['chain_pct_of_largest'])} %)",
                _pm(fam["acceleration_flops"], 2) + "×", _pm(fam.get("acceleration_wall"), 2) + "×" + wall_mark(fam),
                str(m["flops"]["n"])]) + " |")
    return "\n".join(lines)


def wall_mark(fam: dict) -> str:
    """The marks after a family wall-clock figure: how its stages were measured (WALL_MARKS), ‡ if copied."""
    return WALL_MARKS[fam.get("acceleration_wall_status", "not recorded")] \
        + (COPIED if fam.get("wall_copied", {}).get("copied") else "")


def wall_copies(runs: list[RunSummary]) -> dict:
    """Of the stages behind a variant's family wall-clock (its finished chain members and their baselines, as in
    `compt.report`), how many `experiments.py` copied from another variant's run, and from which runs."""
    n, used, donors = min(len(r.chain) for r in runs), 0, []
    for r in runs:
        dirs = dict.fromkeys([s.directory for s in plan_stages(r.cfg, baselines=False)[:n]]
                             + [baseline_dir(r.cfg, i) for i in range(n)])
        copied = copied_stages(Path(r.run_dir))
        used += len(dirs)
        donors += [copied[d].rsplit("/", 3)[0] for d in dirs if d in copied]   # experiment/variant
    return {"copied": len(donors), "of": used, "from": sorted(set(donors))}


def variant_summary(runs: list[RunSummary]) -> dict:
    """`compt.report.summarise`, plus which stages behind the family wall-clock were copied from another run."""
    s = summarise(runs)
    if "acceleration_wall" in s["family"]:
        s["family"]["wall_copied"] = wall_copies(runs)
    return s


def copied_note(rows: list[tuple[str, dict]]) -> list[str]:
    """The ‡ footnote under a variant table: per variant, its wall-clock stages copied and where from."""
    parts = [f"{name}: {c['copied']} of {c['of']} from {', '.join(c['from'])}" for name, s in rows
             if (c := s["family"].get("wall_copied", {})).get("copied")]
    return ([f"‡ Stages behind the wall-clock acceleration that were copied from another variant's run (their "
             f"wall-clock was measured there): {'; '.join(parts)}.", ""] if parts else [])


def convergence_table(runs: list[RunSummary]) -> str:
    """How far each individual baseline still moved in the second half of its schedule (mean over seeds)."""
    metrics = metrics_for(runs[0].cfg)
    digits = 3 if lower_is_better(metrics[0][0]) else 1
    head = ["baseline", "epochs", *[f"{label} at ½ → end" for _, label in metrics]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, model in enumerate(r.model for r in runs[0].chain):
        rows = [run.individual[i] for run in runs if run.individual[i] is not None and run.individual[i].history]
        if not rows:
            continue
        cells = []
        for key, _ in metrics:
            half = [min(r.history, key=lambda h: abs(h["epoch"] - r.epochs / 2)).get(key) for r in rows]
            end = [r.metrics.get(key) for r in rows]
            if None in half or None in end:
                cells.append("—")
                continue
            cells.append(f"{sum(half) / len(half):.{digits}f} → {sum(end) / len(end):.{digits}f}")
        lines.append(f"| {model} | {rows[0].epochs:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def matched_epoch(history: list[dict], key: str, value: float) -> float | None:
    """The (linearly interpolated) epoch at which a baseline's evaluation history first reaches `value` (for a
    loss: first gets down to it); None when it never does. Before the first evaluation an accuracy is taken to
    rise linearly from 0 at epoch 0; a loss reached by the first evaluation gives that evaluation's epoch (an
    upper bound: the untrained loss is not recorded)."""
    sign = -1.0 if lower_is_better(key) else 1.0
    prev_epoch, prev = 0.0, (None if sign < 0 else 0.0)
    for h in history:
        if key not in h:
            continue
        y, v = sign * h[key], sign * value
        if y >= v:
            if prev is None:
                return float(h["epoch"])
            frac = (v - prev) / (y - prev) if y > prev else 1.0
            return prev_epoch + max(0.0, min(1.0, frac)) * (h["epoch"] - prev_epoch)
        prev_epoch, prev = h["epoch"], y
    return None


def equal_loss_costs(run: RunSummary, key: str = "val_loss") -> list[tuple[float, float, bool]]:
    """Per member: (FLOPs, wall-clock s, reached) its individual baseline spent until its held-out loss first
    equals the chain member's final loss (a fraction of its schedule, interpolated between evaluations; the
    whole baseline and reached=False when it never gets there). Member 1 is the same training in both."""
    out = []
    for i, (chain, base) in enumerate(zip(run.chain, run.individual)):
        epoch = base.epochs if i == 0 else matched_epoch(base.history, key, chain.metrics[key])
        frac = 1.0 if epoch is None else epoch / base.epochs
        out.append((frac * base.flops, frac * base.wall_s, epoch is not None))
    return out


def equal_loss_table(variants: list[tuple[str, list[RunSummary]]]) -> str:
    """Per grown member: the baseline compute that reaches the chain member's final loss, against the chain's
    cumulative compute; per variant: the family acceleration at equal loss (means over seeds)."""
    head = ["variant", "member", "chain cumulative FLOPs", "baseline FLOPs to reach chain loss",
            "baseline epochs to reach it", "family accel. at equal loss (FLOPs)", "(wall-clock)", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, runs in variants:
        costs = [equal_loss_costs(r) for r in runs]
        accel = [sum(f for f, _, _ in c) / r.chain_flops for c, r in zip(costs, runs)]
        wall = [sum(w for _, w, _ in c) / r.chain_wall for c, r in zip(costs, runs)]
        status = combined_status([x for r in runs for x in r.chain + r.individual])
        mark = wall_mark({"acceleration_wall_status": status, "wall_copied": wall_copies(runs)})
        for i in range(1, len(runs[0].chain)):
            reached = [c[i][2] for c in costs]
            flops = sum(c[i][0] for c in costs) / len(costs)
            epochs = [c[i][0] / r.individual[i].flops * r.individual[i].epochs
                      for c, r, ok in zip(costs, runs, reached) if ok]
            schedule = runs[0].individual[i].epochs
            if all(reached):
                when = f"{sum(epochs) / len(epochs):.2f} of {schedule:g}"
            else:
                when = (f"{sum(epochs) / len(epochs):.2f} of {schedule:g}, " if epochs else "") + \
                    f"never in {reached.count(False)}/{len(reached)} seeds (its whole curve is above)"
            bound = "" if all(ok for c in costs for _, _, ok in c) else "≥ "
            family = [f"{bound}{_pm(stat(accel), 2)}×", f"{bound}{_pm(stat(wall), 2)}×{mark}"] \
                if i == 1 else ["", ""]
            lines.append(f"| {name} | {runs[0].chain[i].model} | "
                         f"{human_flops(sum(r.chain[i].cumulative_flops for r in runs) / len(runs))} | "
                         f"{'' if all(reached) else '≥ '}{human_flops(flops)} | {when} | " + " | ".join(family)
                         + f" | {len(runs)} |")
    return "\n".join(lines)


def worth_table(variants: list[tuple[str, list[RunSummary]]]) -> str:
    """For each grown member: how many epochs of its own individual baseline reach the chain member's final
    accuracy (mean over seeds), next to the epochs the chain stage actually trained."""
    head = ["variant", "member", "stage epochs", *[f"baseline epochs to reach chain {label}" for _, label in METRICS],
            "baseline epochs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, runs in variants:
        for i in range(1, len(runs[0].chain)):
            cells = []
            for key, _ in METRICS:
                got = [matched_epoch(run.individual[i].history, key, run.chain[i].metrics[key]) for run in runs
                       if run.individual[i] is not None and key in run.chain[i].metrics]
                reached = [g for g in got if g is not None]
                if not got:
                    cells.append("—")
                elif len(reached) < len(got):
                    mean = f"{sum(reached) / len(reached):.1f}, " if reached else ""
                    cells.append(f"{mean}never in {len(got) - len(reached)}/{len(got)} seeds (chain above the "
                                 "baseline's whole curve)")
                else:
                    cells.append(f"{sum(reached) / len(reached):.1f}")
            base = runs[0].individual[i]
            lines.append(f"| {name} | {runs[0].chain[i].model} | {runs[0].chain[i].epochs:g} | " + " | ".join(cells)
                         + (f" | {base.epochs:g} |" if base else " | — |"))
    return "\n".join(lines)


def paired_deltas(variant: list[tuple[Path, RunSummary]], reference: list[tuple[Path, RunSummary]]) -> dict:
    """Per grown member and metric, the mean over shared seeds of (variant's chain member − reference's chain
    member): two recipes compared on the same seeds, baselines and member 1, so the baselines' seed noise cancels.
    Returns {"n": seeds, (i, key): mean difference}."""
    ref = {d.name: run for d, run in reference}
    pairs = [(run, ref[d.name]) for d, run in variant if d.name in ref]
    out: dict = {"n": len(pairs)}
    if not pairs:
        return out
    for i in range(1, min(len(pairs[0][0].chain), len(pairs[0][1].chain))):
        for key, _ in METRICS:
            diffs = [a.chain[i].metrics[key] - b.chain[i].metrics[key] for a, b in pairs
                     if key in a.chain[i].metrics and key in b.chain[i].metrics]
            if len(diffs) == len(pairs):
                out[(i, key)] = sum(diffs) / len(diffs)
    return out


def paired_table(rows: list[tuple[str, list[tuple[Path, RunSummary]], str, list[tuple[Path, RunSummary]]]]) -> str:
    """One row per (variant, its runs, reference name, reference runs): each grown member's change against the
    reference recipe on the same seeds."""
    head = ["variant", "against", *[f"Δ {label} (grown members)" for _, label in METRICS], "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, pairs, ref_name, reference in rows:
        d = paired_deltas(pairs, reference)
        if not d["n"]:
            continue
        models = [r.model.split("/")[-1] for r in pairs[0][1].chain[1:]]
        cells = [" / ".join(f"{m} {d[(i, key)]:+.1f}" if (i, key) in d else f"{m} —"
                            for i, m in enumerate(models, start=1)) for key, _ in METRICS]
        lines.append("| " + " | ".join([name, ref_name, *cells, str(d["n"])]) + " |")
    return "\n".join(lines)


def paired_rows(exp, done: dict[str, list[tuple[Path, RunSummary]]], runs: Path) -> list[tuple]:
    """Each finished variant of `exp` with the PAIRED experiment's variant of the same family as its reference."""
    ref_exp = EXPERIMENTS[PAIRED[exp.name]]
    out = []
    for v in exp.variants:
        ref = next((r for r in ref_exp.variants if r.chain == v.chain), None)
        if done.get(v.name) and ref is not None:
            ref_name = f"{ref_exp.name}/{ref.name}"
            out.append((v.name, done[v.name], ref_name, _complete_runs(runs / ref_name, baselines=False)))
    return out


def control_rows(exp, done: dict[str, list[tuple[Path, RunSummary]]]) -> list[tuple]:
    """Each finished variant of `exp` that names a `control` variant of the same experiment, with its runs."""
    return [(v.name, done[v.name], f"{exp.name}/{v.control}", list(done[v.control]))
            for v in exp.variants if v.control and done.get(v.name) and done.get(v.control)]


def distance_table(rows: list[tuple[str, list[tuple[Path, RunSummary]]]]) -> str:
    """Each grown member's distance from its parent (`compt.diagnostics`), mean over seeds: image-embedding
    CKA with the parent at the stage's start → end, and the relative parameter update."""
    head = ["variant", *[f"{m} CKA image start → end, ‖Δθ‖/‖θ₀‖" for m in ("member 2", "member 3", "member 4")]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, pairs in rows:
        cells = []
        for i in range(1, len(pairs[0][1].chain)):
            diags = [run.chain[i].diagnostics for _, run in pairs if run.chain[i].diagnostics]
            if len(diags) < len(pairs):
                cells.append("—")
                continue
            mean = {k: sum(d[k] for d in diags) / len(diags) for k in ("cka_image_start", "cka_image_end",
                                                                     "update_norm")}
            cells.append(f"{pairs[0][1].chain[i].model.split('/')[-1]} {mean['cka_image_start']:.3f} → "
                         f"{mean['cka_image_end']:.3f}, {mean['update_norm']:.2f}")
        if any(c != "—" for c in cells):
            lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines)


def second_half_gain(run: RunSummary, i: int, key: str) -> float | None:
    """How much member i's individual baseline still gained in the second half of its schedule (points)."""
    base = run.individual[i]
    if base is None or not base.history or key not in base.metrics:
        return None
    half = min(base.history, key=lambda h: abs(h["epoch"] - base.epochs / 2))
    return base.metrics[key] - half[key] if key in half else None


def payoff_points(variants: list[tuple[str, list[RunSummary]]]) -> list[dict]:
    """One point per (variant, grown member, metric): x = the baseline's second-half gain, y = chain − baseline
    (means over seeds), with the variant's family acceleration in counted FLOPs."""
    points = []
    for name, runs in variants:
        accel = summarise(runs)["family"]["acceleration_flops"]["mean"]
        for i in range(1, len(runs[0].chain)):
            for key, label in METRICS:
                xs = [second_half_gain(r, i, key) for r in runs]
                ys = [r.chain[i].metrics[key] - r.individual[i].metrics[key] for r in runs
                      if r.individual[i] is not None and key in r.chain[i].metrics]
                if not ys or None in xs:
                    continue
                points.append({"variant": name, "member": runs[0].chain[i].model, "metric": label,
                               "x": sum(xs) / len(xs), "y": sum(ys) / len(ys), "seeds": len(ys), "accel": accel})
    return points


def payoff_table(points: list[dict]) -> str:
    head = ["variant", "member", "metric", "baseline gain in its 2nd half", "chain − baseline", "accel. FLOPs",
            "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in points:
        lines.append(f"| {p['variant']} | {p['member']} | {p['metric']} | {p['x']:+.1f} | {p['y']:+.1f} | "
                     f"{p['accel']:.2f}× | {p['seeds']} |")
    return "\n".join(lines)


def plot_payoff(points: list[dict], out: Path) -> Path:
    """x = how far the baseline was from saturating, y = chain member − baseline; one panel per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [label for _, label in METRICS if any(p["metric"] == label for p in points)]
    variants = sorted({p["variant"] for p in points})
    members = sorted({p["member"] for p in points})
    colours = plt.get_cmap("tab10")
    markers = "osD^v<>"
    fig, axes = plt.subplots(1, len(labels), figsize=(5.5 * len(labels), 4.2), squeeze=False)
    for ax, label in zip(axes[0], labels):
        ax.axhspan(-1, 1, color="0.9", zorder=0, label="within 1 point")
        ax.axhline(0, color="0.4", lw=0.8)
        for p in (p for p in points if p["metric"] == label):
            ax.scatter(p["x"], p["y"], color=colours(variants.index(p["variant"]) % 10),
                       marker=markers[members.index(p["member"]) % len(markers)], s=50, zorder=3)
        ax.set_xlabel("individual baseline's gain in the 2nd half of its schedule (points)")
        ax.set_ylabel("chain member − baseline (points)")
        ax.set_title(label)
    handles = [plt.Line2D([], [], color=colours(i % 10), marker="o", ls="", label=v) for i, v in enumerate(variants)]
    handles += [plt.Line2D([], [], color="0.3", marker=markers[i % len(markers)], ls="", label=m)
                for i, m in enumerate(members)]
    fig.tight_layout()
    fig.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))   # beside, over no point
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


def target_check(summary: dict) -> dict:
    """How a CLIP variant's summary stands against TARGET: the worst grown member's Δ per metric, the family
    accelerations, the seeds, and the conditions it misses (empty: target met)."""
    fam = summary["family"]
    chain = [m for m in summary["members"] if m["method"] == "chain"][1:]
    worst = {label: min(m[f"delta_{k}"] for m in chain) for k, label in METRICS
             if chain and all(f"delta_{k}" in m for m in chain)}
    seeds = min(m["flops"]["n"] for m in chain) if chain else 0
    flops = fam["acceleration_flops"]["mean"]
    wall, status = fam.get("acceleration_wall"), fam.get("acceleration_wall_status", "not recorded")
    misses = [f"{label} {d:+.1f}" for label, d in worst.items() if d < -TARGET["tolerance"]]
    for key, label in METRICS:
        if label in worst:
            continue
        # a metric the chain members never report is one the data cannot measure (Fashion-MNIST: no captions
        # to retrieve); one they report without a Δ lacks the baseline to compare with
        measured = all(key in m for m in chain)
        misses.append("baselines not finished" if measured else f"no {label} on this data")
    if flops < TARGET["flops"]:
        misses.append(f"{flops:.2f}× FLOPs")
    if wall is None or wall["mean"] < TARGET["wall"]:
        misses.append("no wall-clock" if wall is None else f"{wall['mean']:.2f}× wall-clock")
    else:
        misses += ["wall-clock not measured clean"] if status != "clean" else []
        misses += ["wall-clock mixes runs"] if fam.get("wall_copied", {}).get("copied") else []
    if seeds < TARGET["seeds"]:
        misses.append(f"{seeds} seed" + ("s" if seeds != 1 else ""))
    return {"worst": worst, "flops": flops, "wall": wall, "mark": wall_mark(fam), "seeds": seeds, "misses": misses}


def target_section(candidates: list[tuple[str, dict]]) -> list[str]:
    """Every 4-member CLIP variant at >= 4x counted FLOPs (runs under --runs), checked against TARGET."""
    rows = [(name, target_check(s)) for name, s in candidates
            if len([m for m in s["members"] if m["method"] == "chain"]) == TARGET["members"]
            and [tuple(m) for m in s["metrics"]] == list(METRICS)
            and s["family"]["acceleration_flops"]["mean"] >= TARGET["flops"]]
    parts = ["## The target: ≥ 4× with every grown member within 1 point", "",
             f"Every {TARGET['members']}-member CLIP variant above whose chain costs ≤ 1/{TARGET['flops']:g} of "
             "training the members alone (counted FLOPs), checked against the target: wall-clock acceleration "
             f"≥ {TARGET['wall']:g}× measured clean in the same runs, every grown member within "
             f"{TARGET['tolerance']:g} point of its baseline or above on zero-shot top-1 and retrieval R@1 (mean "
             f"of ≥ {TARGET['seeds']} seeds). Worst: the lowest Δ over the grown members.", ""]
    if not rows:
        return parts + ["_no variant at ≥ 4× has finished yet_", ""]
    head = ["variant", "accel. FLOPs", "accel. wall-clock", *[f"worst Δ {label}" for _, label in METRICS], "seeds",
            "target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, t in rows:
        wall = "—" if t["wall"] is None else f"{_pm(t['wall'], 2)}×{t['mark']}"
        worst = [f"{t['worst'][label]:+.1f}" if label in t["worst"] else "—" for _, label in METRICS]
        verdict = "**met**" if not t["misses"] else "missed: " + ", ".join(t["misses"])
        lines.append("| " + " | ".join([name, f"{t['flops']:.2f}×", wall, *worst, str(t["seeds"]), verdict]) + " |")
    met = sum(not t["misses"] for _, t in rows)
    return parts + ["\n".join(lines), "", f"{met} of {len(rows)} variants meet the target.", ""]


def payoff_section(runs_root: Path, img: Path) -> list[str]:
    """'When does CoM-PT pay off': every run with grown members at the paper's fractions of the baseline."""
    variants = []
    for exp_name in PAYOFF:
        for v in EXPERIMENTS[exp_name].variants:
            pairs = _complete_runs(runs_root / exp_name / v.name)
            if pairs and not (exp_name == "saturation" and _same_as_protocol(v.name)):
                variants.append((f"{exp_name}/{v.name}", [run for _, run in pairs]))
    parts = ["## When does CoM-PT pay off?", "",
             "Every run whose grown members train the paper's fractions of their baseline's schedule (24/128, "
             "18/128, 15/128): the `saturation` grid (same 4 members, baselines from barely trained to a fixed "
             "budget of 320k samples) and `paper_protocol`. x: how much the individual baseline still gained "
             "between the middle and the end of its schedule; y: chain member minus baseline (mean over seeds).", ""]
    points = payoff_points(variants)
    if not points:
        return parts + ["_not run yet_", ""]
    plot_payoff(points, img / "payoff_map.png")
    return parts + [payoff_table(points), "", "![when the chain pays off](img/payoff_map.png)", ""]


def _same_as_protocol(variant: str) -> bool:
    """saturation's 2.5k × 128 point is paper_protocol's N→T→C→S run (its stages are copied from there)."""
    return variant == "sat-2.5k-128ep"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", default=str(ROOT / "benchmarks" / "runs"),
                   help="run summaries (benchmarks/runs, committed; experiments.py copies each finished run there) "
                        "or runs/bench (the full runs with checkpoints)")
    p.add_argument("--out", default=str(ROOT / "docs" / "results.md"))
    args = p.parse_args(argv)
    runs, out = Path(args.runs), Path(args.out)
    img = out.parent / "img"
    img.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    parts = ["# CoM-PT at small scale: measured results", "",
             "Generated by `python benchmarks/make_results.py` from the runs of "
             "`benchmarks/run_all.sh` (`python benchmarks/experiments.py EXPERIMENT --seeds …`; "
             "the seeds column says how many) "
             f"(base config `benchmarks/configs/tiny-base.toml`, commit {commit}).", "",
             "Each section says which runs, commit and machine it was generated from. "
             "FLOPs are counted (samples processed × analytic per-sample FLOPs, "
             "teacher forward included); wall-clock is measured training time of each stage on this machine, "
             "baselines and chain in the same run. In the tables, an accel. wall-clock marked † used a stage that "
             "ran while other processes shared the CPU (indicative only; the per-stage reasons are in each run's "
             "`compt report`), one marked ? used stages whose conditions were not recorded (runs from before "
             "compt recorded them), and one marked ‡ includes stages that `experiments.py` copied from another "
             "variant's run (a finished stage with identical settings is trained once per seed), so it mixes "
             "measurements made at different times, under different load; the copied stages are listed under "
             "each table.", ""]
    candidates: list[tuple[str, dict]] = []
    analysis = ROOT / "benchmarks" / "analysis.md"
    if analysis.is_file():
        parts += [analysis.read_text().strip(), ""]
    for exp in sorted(EXPERIMENTS.values(), key=lambda e: ORDER.index(e.name) if e.name in ORDER else len(ORDER)):
        done = {v.name: _complete_runs(runs / exp.name / v.name, baselines=exp.name not in PARTIAL_OK)
                for v in exp.variants}
        rows = [(name, variant_summary([run for _, run in pairs])) for name, pairs in done.items() if pairs]
        candidates += [(f"{exp.name}/{name}", s) for name, s in rows]
        if not rows:
            parts += [f"## {exp.name}: {exp.question}\n\n_No run summaries of this experiment are in "
                      f"`benchmarks/runs`, so nothing here is regenerated from data; reproduce with "
                      f"`python benchmarks/experiments.py {exp.name} --seeds 0 1`._\n"]
            continue
        parts += [f"## {exp.name}: {exp.question}", "",
                  f"_Runs: `{_rel(runs / exp.name)}`, generated at commit {commit} on {machine()}; made with "
                  f"{reproduce(exp, done)}._", "",
                  variant_table(rows), "", *copied_note(rows)]
        if exp.name == "parity":
            parts += ["These chain-only runs stop at the committed `paper_protocol` baselines of the same seed (not "
                      "copied here, so Δ shows —): the section \"Acceleration at parity\" compares them.", ""]
        elif missing := missing_baselines(done):
            parts += ["Baselines not finished yet (Δ shows —, the FLOPs acceleration uses their planned cost, "
                      "no wall-clock acceleration): " + "; ".join(missing) + ".", ""]
        if exp.name in PAIRED:
            parts += [f"Each recipe against the `{PAIRED[exp.name]}` run of its family on the same seeds (same "
                      "baselines and member 1, so the baselines' seed noise cancels): the grown members' change in "
                      "points, mean over the seeds both have:", "", paired_table(paired_rows(exp, done, runs)), ""]
        if controlled := control_rows(exp, done):
            parts += ["Growth settings against their control on the same seeds and the same member 1 (the "
                      "variant's `control`, which differs only in the growth setting): the grown members' change "
                      "in points, mean over the seeds both have:", "", paired_table(controlled), "",
                      "How far each grown member moved from its parent during its stage (`compt.diagnostics`: "
                      "linear CKA of the held-out retrieval images' embeddings with the parent's, at the stage's "
                      "start and end; 1 = the parent's representation; — where the run predates the diagnostic):",
                      "", distance_table([(n, pairs) for n, pairs, _, _ in controlled]
                                         + [(controlled[0][2].split("/")[1], controlled[0][3])]), ""]
        first = done[exp.variants[0].name]
        if exp.name in CONVERGENCE and first:
            parts += ["Are the individual baselines converged? Evaluated at half of their schedule and at the end:",
                      "", convergence_table([run for _, run in first]), ""]
        if exp.name in CONVERGENCE and first and exp.name not in EQUAL_LOSS:
            parts += ["What is a grown member worth? The epoch at which its individual baseline's evaluation "
                      "curve reaches the chain member's final accuracy (interpolated between evaluations; "
                      "'never': the baseline stays below the chain member throughout):", "",
                      worth_table([(name, [run for _, run in pairs]) for name, pairs in done.items() if pairs]), ""]
        if exp.name in EQUAL_LOSS and first:
            parts += ["Compute at equal loss: the FLOPs (and fraction of its schedule) each individual baseline "
                      "spends until its held-out loss first equals the chain member's final loss (interpolated "
                      "between its evaluations; '≥' where it never gets there), and the family acceleration at "
                      "equal loss = Σ those baseline costs / the chain's cost (member 1 is the same training in "
                      "both):", "",
                      equal_loss_table([(name, [run for _, run in pairs]) for name, pairs in done.items() if pairs]),
                      ""]
        if exp.name in PLOTTED and first:
            report_dir, _ = write_report([d for d, _ in first], runs / exp.name / "report")
            for png in (p for p in ("accuracy_vs_compute.png", "cost_breakdown.png") if (report_dir / p).is_file()):
                shutil.copy(report_dir / png, img / f"{exp.name}_{png}")
                parts += [f"![{exp.name} {png[:-4]}](img/{exp.name}_{png})", ""]
    parts += parity_section(runs)
    parts += parity_ttt_section(runs)
    parts += parity_real_section(runs)
    parts += lm_parity_section(runs)
    parts += vit_parity_section(runs)
    parts += roads_section(runs)
    parts += target_section(candidates)
    parts += payoff_section(runs, img)
    parts += finetune_section(runs)
    parts += lm_eval_section(runs)
    out.write_text("\n".join(parts))
    print(f"wrote {out}")
    return 0


def reproduce(exp, done: dict[str, list[tuple[Path, RunSummary]]]) -> str:
    """The experiments.py command line(s) that made an experiment's finished runs, and their base config."""
    seeds = sorted({int(d.name.removeprefix("seed")) for pairs in done.values() for d, _ in pairs})
    names = [v.name for v in exp.variants if done.get(v.name)]
    only = "" if len(names) == len(exp.variants) else f" --variants {' '.join(names)}"
    bases = sorted({v.base for v in exp.variants if v.name in names})
    return (f"`python benchmarks/experiments.py {exp.name}{only} --seeds {' '.join(map(str, seeds))}` (base config "
            f"{', '.join(f'`benchmarks/configs/{b}`' for b in bases)})")


def missing_baselines(done: dict[str, list[tuple[Path, RunSummary]]]) -> list[str]:
    """'variant/seedK: model, …' for every listed run whose baselines have not all finished."""
    out = []
    for name, pairs in done.items():
        for d, run in pairs:
            models = [run.chain[i].model for i, r in enumerate(run.individual) if r is None]
            if models:
                out.append(f"{name}/{d.name}: {', '.join(models)}")
    return out


if __name__ == "__main__":
    sys.exit(main())
