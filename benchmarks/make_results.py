"""Generate docs/results.md from the experiment runs under runs/bench (see benchmarks/experiments.py).

    python benchmarks/make_results.py [--runs runs/bench] [--out docs/results.md]

Tables come from `compt.report.summarise` over each variant's seed runs (mean ± std); the written analysis
is `benchmarks/analysis.md`, included verbatim after the tables' header.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from compt.plan import human_flops
from compt.report import METRICS, RunSummary, load_run, summarise, write_report

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from experiments import EXPERIMENTS  # noqa: E402

# the order docs/results.md reads in
ORDER = ("main", "paper_protocol", "paper_regime", "fashion", "fashion_wide", "openclipart", "siglip", "lm", "transfer",
         "growth_op", "distill_loss", "alpha", "stage_lr", "epochs", "family_size", "prepend")
CONVERGENCE = ("main", "paper_protocol", "paper_regime")   # experiments that show how far their baselines still moved
PLOTTED = ("main", "paper_protocol", "paper_regime", "family_size", "fashion", "fashion_wide",
           "openclipart")   # experiments with plots


def _pm(stat: dict | None, digits: int = 1) -> str:
    if not stat:
        return "—"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}" if stat["n"] > 1 else f"{stat['mean']:.{digits}f}"


def variant_table(rows: list[tuple[str, dict]]) -> str:
    """One row per (variant, member): chain accuracy (LMs: held-out loss), Δ to the individual baseline, and
    family-level cost."""
    metrics = [tuple(m) for m in rows[0][1].get("metrics", METRICS)]
    head = ["variant", "member", *[f"chain {label}" for _, label in metrics], *[f"Δ {k}" for k, _ in metrics],
            f"individual {metrics[0][1]}", "chain FLOPs (% of largest alone)", "accel. FLOPs", "accel. wall-clock",
            "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    digits = 1 if metrics[0][0] == METRICS[0][0] else 3
    for name, s in rows:
        ind = {m["model"]: m for m in s["members"] if m["method"] == "individual"}
        fam = s["family"]
        for m in (m for m in s["members"] if m["method"] == "chain"):
            deltas = [f"{m[f'delta_{k}']:+.{digits}f}" if f"delta_{k}" in m else "—" for k, _ in metrics]
            lines.append("| " + " | ".join([
                name, m["model"], *[_pm(m.get(k), digits) for k, _ in metrics], *deltas,
                _pm(ind.get(m["model"], {}).get(metrics[0][0]), digits),
                f"{human_flops(fam['chain_flops']['mean'])} ({_pm(fam['chain_pct_of_largest'])} %)",
                _pm(fam["acceleration_flops"], 2) + "×", _pm(fam.get("acceleration_wall"), 2) + "×",
                str(m["flops"]["n"])]) + " |")
    return "\n".join(lines)


def convergence_table(runs: list[RunSummary]) -> str:
    """How far each individual baseline still moved in the second half of its schedule (mean over seeds)."""
    head = ["baseline", "epochs", *[f"{label} at ½ → end" for _, label in METRICS]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, model in enumerate(r.model for r in runs[0].chain):
        rows = [run.individual[i] for run in runs if run.individual[i] is not None and run.individual[i].history]
        if not rows:
            continue
        cells = []
        for key, _ in METRICS:
            half = [min(r.history, key=lambda h: abs(h["epoch"] - r.epochs / 2)).get(key) for r in rows]
            end = [r.metrics.get(key) for r in rows]
            if None in half or None in end:
                cells.append("—")
                continue
            cells.append(f"{sum(half) / len(half):.1f} → {sum(end) / len(end):.1f}")
        lines.append(f"| {model} | {rows[0].epochs:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def matched_epoch(history: list[dict], key: str, value: float) -> float | None:
    """The (linearly interpolated) epoch at which a baseline's evaluation history first reaches `value`;
    None when it never does. Before the first evaluation the curve is taken to rise linearly from 0 at epoch 0."""
    prev_epoch, prev = 0.0, 0.0
    for h in history:
        if key not in h:
            continue
        if h[key] >= value:
            frac = (value - prev) / (h[key] - prev) if h[key] > prev else 1.0
            return prev_epoch + max(0.0, min(1.0, frac)) * (h["epoch"] - prev_epoch)
        prev_epoch, prev = h["epoch"], h[key]
    return None


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


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        model = cpu
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", default=str(ROOT / "runs" / "bench"))
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
             f"Machine: {machine()}. FLOPs are counted (samples processed × analytic per-sample FLOPs, "
             "teacher forward included); wall-clock is measured training time of each stage on this machine, "
             "baselines and chain in the same run.", ""]
    analysis = ROOT / "benchmarks" / "analysis.md"
    if analysis.is_file():
        parts += [analysis.read_text().strip(), ""]
    for exp in sorted(EXPERIMENTS.values(), key=lambda e: ORDER.index(e.name) if e.name in ORDER else len(ORDER)):
        done = {v.name: _complete_runs(runs / exp.name / v.name) for v in exp.variants}
        rows = [(name, summarise([run for _, run in pairs])) for name, pairs in done.items() if pairs]
        if not rows:
            parts += [f"## {exp.name}: {exp.question}", "", "_not run yet_", ""]
            continue
        parts += [f"## {exp.name}: {exp.question}", "", variant_table(rows), ""]
        first = done[exp.variants[0].name]
        if exp.name in CONVERGENCE and first:
            parts += ["Are the individual baselines converged? Evaluated at half of their schedule and at the end:",
                      "", convergence_table([run for _, run in first]), ""]
            parts += ["What is a grown member worth? The epoch at which its individual baseline's evaluation "
                      "curve reaches the chain member's final accuracy (interpolated between evaluations; "
                      "'never': the baseline stays below the chain member throughout):", "",
                      worth_table([(name, [run for _, run in pairs]) for name, pairs in done.items() if pairs]), ""]
        if exp.name in PLOTTED and first:
            report_dir, _ = write_report([d for d, _ in first], runs / exp.name / "report")
            for png in ("accuracy_vs_compute.png", "cost_breakdown.png"):
                shutil.copy(report_dir / png, img / f"{exp.name}_{png}")
                parts += [f"![{exp.name} {png[:-4]}](img/{exp.name}_{png})", ""]
    out.write_text("\n".join(parts))
    print(f"wrote {out}")
    return 0


def _complete_runs(variant_dir: Path) -> list[tuple[Path, RunSummary]]:
    """The variant's seed runs whose chain and baselines have all finished, each loaded once."""
    out = []
    for d in sorted(variant_dir.glob("seed*")):
        try:
            run = load_run(d)
        except Exception:
            continue
        if len(run.chain) == len(run.cfg.chain) and all(r is not None for r in run.individual):
            out.append((d, run))
    return out


if __name__ == "__main__":
    sys.exit(main())
