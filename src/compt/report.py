"""`compt report`: the paper-style table and plots from one or more run directories.

Everything comes from what the runs wrote (`config.toml`, `run.json`, each stage's `result.json`): training
FLOPs are the counted FLOPs of the samples each stage processed (teacher forward included), wall-clock is
the measured training time (growth included). Several runs of the same config (e.g. seeds) are reported as
mean ± std.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from compt.chain import baseline_dir, slug
from compt.config import RunConfig, config_from_dict
from compt.errors import UserError
from compt.plan import human_flops, plan_chain

METRICS = (("zeroshot_top1", "zero-shot top-1"), ("retrieval_r1", "retrieval R@1"))
LM_METRICS = (("val_loss", "held-out loss"), ("val_ppl", "held-out perplexity"))


def metrics_for(cfg: RunConfig) -> tuple[tuple[str, str], ...]:
    """The table's metric columns: CLIP evaluation, or held-out loss/perplexity for language-model runs."""
    from compt.lm.models import is_lm

    return LM_METRICS if is_lm(cfg.chain[0].model) else METRICS


@dataclass
class StageRow:
    model: str
    method: str                  # "chain" | "individual"
    epochs: float
    flops: float                 # training FLOPs of this stage
    cumulative_flops: float      # chain: FLOPs to obtain this member (stages 1..i); individual: = flops
    wall_s: float
    metrics: dict[str, float]
    history: list[dict] = field(default_factory=list)


@dataclass
class RunSummary:
    name: str
    run_dir: str
    chain: list[StageRow]
    individual: list[StageRow | None]
    cfg: RunConfig

    @property
    def chain_flops(self) -> float:
        return sum(r.flops for r in self.chain)

    @property
    def chain_wall(self) -> float:
        return sum(r.wall_s for r in self.chain)

    def individual_flops(self) -> list[float]:
        """Counted FLOPs of each baseline; the planner's analytic figure where a baseline was not run."""
        planned = plan_chain(self.cfg).members
        return [r.flops if r else planned[i].individual_cost for i, r in enumerate(self.individual)]


def _load_result(path: Path) -> dict[str, Any] | None:
    """A stage's result.json plus the growth time recorded in its lineage.json."""
    f, lineage = path / "result.json", path / "lineage.json"
    if not f.is_file():
        return None
    grow_s = json.loads(lineage.read_text()).get("grow_s", 0.0) if lineage.is_file() else 0.0
    return {**json.loads(f.read_text()), "grow_s": grow_s}


def _row(res: dict[str, Any], model: str, method: str, epochs: float, offset: float) -> StageRow:
    flops = float(res["train_flops"])
    return StageRow(model=model, method=method, epochs=epochs, flops=flops, cumulative_flops=offset + flops,
                    wall_s=float(res["wall_clock_s"]) + float(res.get("grow_s", 0.0)),
                    metrics={k: float(v) for k, v in res.get("metrics", {}).items()},
                    history=res.get("history", []))


def load_run(run_dir: str | Path) -> RunSummary:
    """Read a run directory; missing stages are reported as not run."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").is_file():
        raise UserError(f"{run_dir} is not a compt run directory (no config.toml); run `compt train` first")
    cfg = config_from_dict(tomllib.loads((run_dir / "config.toml").read_text()))
    chain, total = [], 0.0
    for i, m in enumerate(cfg.chain):
        res = _load_result(run_dir / f"chain/{i + 1:02d}-{slug(m.model)}")
        if res is None:
            break
        chain.append(_row(res, m.model, "chain", m.epochs, total))
        total += chain[-1].flops
    individual = []
    for i, m in enumerate(cfg.chain):
        res = _load_result(run_dir / baseline_dir(cfg, i))
        individual.append(_row(res, m.model, "individual", cfg.individual_epochs, 0.0) if res else None)
    if not chain:
        raise UserError(f"{run_dir}: no finished stage yet")
    return RunSummary(name=cfg.name, run_dir=str(run_dir), chain=chain, individual=individual, cfg=cfg)


def _stat(values: list[float]) -> dict[str, float]:
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
                     "flops": _stat([x.flops for x in rows]),
                     "cumulative_flops": _stat([x.cumulative_flops for x in rows]),
                     "wall_s": _stat([x.wall_s for x in rows])}
            for key, _ in metrics_for(base.cfg):
                vals = [x.metrics[key] for x in rows if key in x.metrics]
                if vals:
                    entry[key] = _stat(vals)
            members.append(entry)
    metrics = metrics_for(base.cfg)
    _add_deltas(members, metrics)
    return {"name": base.name, "runs": [r.run_dir for r in runs], "members": members,
            "family": _family(runs, n_members), "metrics": [list(m) for m in metrics]}


def _add_deltas(members: list[dict[str, Any]], metrics: tuple[tuple[str, str], ...]) -> None:
    ind = {m["model"]: m for m in members if m["method"] == "individual"}
    for m in members:
        if m["method"] == "chain" and m["model"] in ind:
            for key, _ in metrics:
                if key in m and key in ind[m["model"]]:
                    m[f"delta_{key}"] = m[key]["mean"] - ind[m["model"]][key]["mean"]


def _family(runs: list[RunSummary], n_members: int) -> dict[str, Any]:
    complete = n_members == len(runs[0].cfg.chain)
    chain = [r.chain_flops for r in runs]
    per_member = [r.individual_flops() for r in runs]
    indiv = [sum(f) for f in per_member]
    largest = [f[-1] for f in per_member]
    out: dict[str, Any] = {"complete": complete, "chain_flops": _stat(chain), "individual_flops": _stat(indiv),
                           "chain_pct_of_largest": _stat([100 * c / lg for c, lg in zip(chain, largest)]),
                           "acceleration_flops": _stat([i / c for i, c in zip(indiv, chain)]),
                           "baselines_counted": all(all(x is not None for x in r.individual) for r in runs)}
    if out["baselines_counted"]:
        walls = [(sum(x.wall_s for x in r.individual), r.chain_wall) for r in runs]
        out["acceleration_wall"] = _stat([i / c for i, c in walls])
        out["chain_wall_pct_of_largest"] = _stat([100 * r.chain_wall / r.individual[-1].wall_s for r in runs])
    return out


def _fmt(stat: dict[str, float] | None, scale: float = 1.0, digits: int = 1) -> str:
    if not stat:
        return "—"
    mean = stat["mean"] * scale
    return f"{mean:.{digits}f} ± {stat['std'] * scale:.{digits}f}" if stat["n"] > 1 else f"{mean:.{digits}f}"


def format_markdown(summary: dict[str, Any]) -> str:
    """The paper-style table (Markdown) plus family-level lines."""
    metrics = summary.get("metrics", METRICS)
    digits = 3 if metrics[0][0] == LM_METRICS[0][0] else 1
    lines = ["| member | method | epochs | train FLOPs | cumulative | wall-clock (s) | "
             + " | ".join(f"{label} | Δ" for _, label in metrics) + " |",
             "|---|---|---:|---:|---:|---:|" + "---:|---:|" * len(metrics)]
    for m in summary["members"]:
        cells = [f"{_fmt(m.get(k), digits=digits)} | " + (f"{m[f'delta_{k}']:+.{digits}f}" if f"delta_{k}" in m
                                                          else "") for k, _ in metrics]
        lines.append(f"| {m['model']} | {m['method']} | {m['epochs']:g} | {human_flops(m['flops']['mean'])} | "
                     f"{human_flops(m['cumulative_flops']['mean'])} | {_fmt(m['wall_s'])} | "
                     + " | ".join(cells) + " |")
    f = summary["family"]
    lines += ["", f"- chain cost: {human_flops(f['chain_flops']['mean'])} = "
                  f"{_fmt(f['chain_pct_of_largest'])} % of training the largest member alone"
                  + ("" if f["baselines_counted"] else " (individual costs from the planner: baselines not run)"),
              f"- family acceleration (FLOPs): {_fmt(f['acceleration_flops'], digits=2)}×"]
    if "acceleration_wall" in f:
        lines.append(f"- family acceleration (wall-clock, same machine, same run): "
                     f"{_fmt(f['acceleration_wall'], digits=2)}×; chain wall-clock = "
                     f"{_fmt(f['chain_wall_pct_of_largest'])} % of the largest member's individual run")
    if not f["complete"]:
        lines.append("- the chain is not finished: family numbers cover the finished stages only")
    return "\n".join(lines)


def write_report(run_dirs: list[str | Path], out_dir: str | Path | None = None) -> tuple[Path, str]:
    """Write report.md, report.json and plots; returns (output folder, Markdown text)."""
    runs = [load_run(d) for d in run_dirs]
    names = {r.name for r in runs}
    if len(names) > 1:
        raise UserError(f"runs of different configs cannot be averaged: {', '.join(sorted(names))}")
    out = Path(out_dir) if out_dir else Path(run_dirs[0]) / "report"
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(runs)
    from compt.plots import plot_accuracy_vs_compute, plot_cost_breakdown

    plots = [plot_accuracy_vs_compute(runs, out / "accuracy_vs_compute.png"),
             plot_cost_breakdown(runs[0], out / "cost_breakdown.png")]
    summary["plots"] = [str(p) for p in plots]
    md = f"# {summary['name']}\n\nRuns: {', '.join(summary['runs'])}\n\n{format_markdown(summary)}\n"
    md += "".join(f"\n![{p.stem}]({p.name})\n" for p in plots)
    (out / "report.md").write_text(md)
    (out / "report.json").write_text(json.dumps(summary, indent=2))
    return out, md
