"""PNG plots for `compt report` (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

if TYPE_CHECKING:
    from compt.report import RunSummary, StageRow

METRICS = (("zeroshot_top1", "zero-shot top-1 (%)"), ("retrieval_r1", "retrieval R@1 (%)"))


def _curve(row: StageRow, offset: float, key: str) -> tuple[list[float], list[float]]:
    """(cumulative FLOPs, metric) points of one stage; `offset` = FLOPs spent before it (chain)."""
    points = [(offset + h["flops"], h[key]) for h in row.history if key in h and "flops" in h]
    if not points and key in row.metrics:
        points = [(offset + row.flops, row.metrics[key])]
    return [p[0] for p in points], [p[1] for p in points]


def plot_accuracy_vs_compute(runs: list[RunSummary], path: Path) -> Path:
    """Accuracy against cumulative training FLOPs: chain (solid) and individual baselines (dashed), per member."""
    from compt.report import metrics_for

    run = runs[0]
    metrics = METRICS if metrics_for(run.cfg)[0][0] == METRICS[0][0] else metrics_for(run.cfg)
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.2), squeeze=False)
    colors = plt.get_cmap("viridis")
    n = len(run.cfg.chain)
    for ax, (key, label) in zip(axes[0], metrics):
        for i, row in enumerate(run.chain):
            c = colors(i / max(1, n - 1))
            xs, ys = _curve(row, row.cumulative_flops - row.flops, key)
            ax.plot(xs, ys, "-o", color=c, ms=3, label=f"{row.model} chain")
            base = run.individual[i]
            if base is not None:
                xs, ys = _curve(base, 0.0, key)
                ax.plot(xs, ys, "--s", color=c, ms=3, alpha=0.8, label=f"{row.model} individual")
        ax.set_xscale("log")
        ax.set_xlabel("cumulative training compute (FLOPs)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, ncol=2)
    fig.suptitle(f"{run.name}: accuracy vs compute" + (f" (seed run 1 of {len(runs)})" if len(runs) > 1 else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_cost_breakdown(run: RunSummary, path: Path) -> Path:
    """Stacked bars: the chain's cost by stage, next to the largest member alone and the whole family alone."""
    individual = run.individual_flops()
    bars = {"CoM-PT chain": [r.flops for r in run.chain], f"{run.chain[-1].model} alone": [individual[-1]],
            "every member alone": individual}
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colors = plt.get_cmap("viridis")
    n = len(run.cfg.chain)
    for x, parts in enumerate(bars.values()):
        bottom = 0.0
        for i, value in enumerate(parts):
            idx = n - 1 if len(parts) == 1 else i
            ax.bar(x, value, bottom=bottom, color=colors(idx / max(1, n - 1)), edgecolor="white",
                   label=run.cfg.chain[idx].model if x == 2 else None)
            bottom += value
        ax.text(x, bottom, f"{100 * bottom / individual[-1]:.0f}%", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(range(len(bars)), list(bars))
    ax.set_ylabel("training FLOPs (counted)")
    ax.set_title("where the compute goes (% of training the largest member alone)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
