"""PNG plots for `compt report` (matplotlib, headless).

Legibility rules: members are told apart by colour from the Okabe–Ito palette (safe for the common kinds of
colour blindness, yellow left out because it vanishes on white); chain and individual runs by line style and
marker (solid, filled circles vs dashed, open squares). Compute axes are in one readable unit (GFLOPs, TFLOPs,
…) with at most `MAX_TICKS` labelled ticks and no labelled minor ticks, so labels cannot collide.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter, NullLocator  # noqa: E402

from compt.paradigm import lower_is_better  # noqa: E402
from compt.runs import RunSummary, StageRow, metrics_for  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")  # Okabe–Ito, no yellow
UNITS = ((1e18, "EFLOPs"), (1e15, "PFLOPs"), (1e12, "TFLOPs"), (1e9, "GFLOPs"), (1e6, "MFLOPs"), (1.0, "FLOPs"))
MANTISSAS = ((1.0,), (1.0, 3.0), (1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 5.0, 7.0))  # sparsest first
MAX_TICKS = 6
CHAIN_STYLE = {"ls": "-", "marker": "o", "ms": 4, "zorder": 3}  # drawn over a baseline that is the same stage
INDIVIDUAL_STYLE = {"ls": "--", "marker": "s", "ms": 6, "markerfacecolor": "white", "zorder": 2}


def member_color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def flops_unit(largest: float) -> tuple[float, str]:
    """(scale, name) of the unit in which `largest` reads as a number from 1 to 999."""
    return next(((s, n) for s, n in UNITS if largest >= s), UNITS[-1])


def log_ticks(lo: float, hi: float, max_ticks: int = MAX_TICKS) -> list[float]:
    """The densest 1-2-5-style tick set with 2 … `max_ticks` ticks inside [lo, hi] (0 < lo < hi)."""
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    best: list[float] = []
    for mantissas in MANTISSAS:
        ticks = [m * 10.0**e for e in decades for m in mantissas if lo <= m * 10.0**e <= hi]
        if len(ticks) > max_ticks:
            break
        best = ticks
    if not best:  # more than `max_ticks` decades: every k-th power of ten
        powers = [10.0**e for e in decades if lo <= 10.0**e <= hi]
        best = powers[:: math.ceil(len(powers) / max_ticks)]
    return best


def _log_limits(xs: list[float], pad: float = 1.25, min_ratio: float = 4.0) -> tuple[float, float]:
    """Padded log-axis limits spanning at least a factor `min_ratio` (so ≥ 2 ticks fit); points at 0 FLOPs (a
    member used as it is) cannot sit on a log axis and do not set the limits."""
    xs = [x for x in xs if x > 0] or [1.0]
    lo, hi = min(xs) / pad, max(xs) * pad
    if hi / lo < min_ratio:
        mid = math.sqrt(lo * hi)
        lo, hi = mid / math.sqrt(min_ratio), mid * math.sqrt(min_ratio)
    return lo, hi


def set_compute_axis(ax: Axes, xs: list[float], label: str = "cumulative training compute") -> None:
    """Log x axis over `xs` (FLOPs) in one unit, with only the ticks `log_ticks` picks labelled."""
    lo, hi = _log_limits(xs)
    scale, unit = flops_unit(hi)
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ticks = log_ticks(lo, hi)
    ax.set_xticks(ticks, [f"{t / scale:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"{label} ({unit})")


def present_metrics(runs: list[RunSummary]) -> list[tuple[str, str]]:
    """The report's metrics (`compt.runs.metrics_for`) that at least one stage of the first run recorded."""
    rows = [r for r in (*runs[0].chain, *runs[0].individual) if r is not None]
    return [(k, label) for k, label in metrics_for(runs[0].cfg)
            if any(k in r.metrics or any(k in h for h in r.history) for r in rows)]


def _curve(row: StageRow, offset: float, key: str) -> tuple[list[float], list[float]]:
    """(cumulative FLOPs, metric) points of one stage; `offset` = FLOPs spent before it (chain)."""
    points = [(offset + h["flops"], h[key]) for h in row.history if key in h and "flops" in h]
    if not points and key in row.metrics:
        points = [(offset + row.flops, row.metrics[key])]
    return [p[0] for p in points], [p[1] for p in points]


def _stage_bands(ax: Axes, run: RunSummary) -> None:
    """Alternate light bands and dotted lines where each chain stage ends."""
    start = 0.0
    for i, row in enumerate(run.chain):
        if i % 2 == 1:
            ax.axvspan(start, row.cumulative_flops, color="0.93", zorder=0, lw=0)
        ax.axvline(row.cumulative_flops, color="0.55", ls=":", lw=1, zorder=0.5)
        start = row.cumulative_flops


def _legend_handles(run: RunSummary) -> list[Line2D]:
    members = [Line2D([], [], color=member_color(i), lw=2.5, label=row.model) for i, row in enumerate(run.chain)]
    return [*members, Line2D([], [], color="0.2", label="CoM-PT chain", **CHAIN_STYLE),
            Line2D([], [], color="0.2", label="individual", **INDIVIDUAL_STYLE),
            Line2D([], [], color="0.55", ls=":", label="chain stage ends")]


def plot_accuracy_vs_compute(runs: list[RunSummary], path: Path) -> Path | None:
    """Write `accuracy_figure` to `path`; None (and no file) when the runs recorded no metric."""
    fig = accuracy_figure(runs)
    if fig is None:
        path.unlink(missing_ok=True)  # a plot from an earlier report would be stale
        return None
    return _save(fig, path)


def plot_cost_breakdown(run: RunSummary, path: Path) -> Path:
    """Write `cost_figure` to `path`."""
    return _save(cost_figure(run), path)


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def accuracy_figure(runs: list[RunSummary]) -> Figure | None:
    """Accuracy (language models: held-out loss) against cumulative training FLOPs, one panel per recorded
    metric; None when none was."""
    run, metrics = runs[0], present_metrics(runs)
    if not metrics:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics) + 1.8, 4.2), squeeze=False,
                             layout="constrained")
    for ax, (key, label) in zip(axes[0], metrics):
        xs = [r.cumulative_flops for r in run.chain]
        for i, row in enumerate(run.chain):
            cx, cy = _curve(row, row.cumulative_flops - row.flops, key)
            ax.plot(cx, cy, color=member_color(i), **CHAIN_STYLE)
            base = run.individual[i] if i < len(run.individual) else None
            bx, by = _curve(base, 0.0, key) if base is not None else ([], [])
            ax.plot(bx, by, color=member_color(i), **INDIVIDUAL_STYLE)
            xs += cx + bx
        _stage_bands(ax, run)
        set_compute_axis(ax, xs)
        ax.set_ylabel(label if lower_is_better(key) else f"{label} (%)")
        ax.margins(y=0.08)
        ax.grid(alpha=0.3, which="major")
    axes[0][-1].legend(handles=_legend_handles(run), fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                       borderaxespad=0)
    seeds = f" (seed run 1 of {len(runs)})" if len(runs) > 1 else ""
    what = "held-out loss" if lower_is_better(metrics[0][0]) else "accuracy"
    fig.suptitle(f"{run.name}: {what} vs training compute{seeds}")
    return fig


def cost_figure(run: RunSummary) -> Figure:
    """Stacked bars: the chain's cost by stage, next to the largest member alone and the whole family alone."""
    individual = run.individual_flops()
    models = [m.model for m in run.cfg.chain]
    big = max(range(len(individual)), key=individual.__getitem__)   # the last member, or member 1 of a down-chain
    bars = {"CoM-PT chain": list(enumerate(r.flops for r in run.chain)),
            f"{models[big]} alone": [(big, individual[big])],
            "every member alone": list(enumerate(individual))}
    scale, unit = flops_unit(max(sum(v for _, v in parts) for parts in bars.values()))
    fig, ax = plt.subplots(figsize=(7.5, 4.4), layout="constrained")
    for x, parts in enumerate(bars.values()):
        bottom = 0.0
        for i, value in parts:
            ax.bar(x, value, bottom=bottom, color=member_color(i), edgecolor="white", width=0.6,
                   label=models[i] if x == 2 else None)
            bottom += value
        ax.text(x, bottom, f"{100 * bottom / individual[big]:.0f} %", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(range(len(bars)), list(bars))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / scale:g}"))
    ax.set_ylabel(f"training compute ({unit}, counted)")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.08)  # room for the percentages
    ax.set_title("where the compute goes (% of training the largest member alone)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return fig
