"""Report plots: panels only for recorded metrics, readable compute axes whose labels never collide, legible styles."""

import math

import matplotlib
import pytest

from compt.config import MemberConfig, RunConfig
from compt.plots import PALETTE, accuracy_figure, cost_figure, flops_unit, log_ticks
from compt.report import RunSummary, StageRow

NAMES = ("test/A", "test/B", "test/C", "tiny/ViT-N", "tiny/ViT-T", "tiny/ViT-C", "tiny/ViT-S")  # registered CLIP models


def toy_run(n: int, metrics: tuple[str, ...] = ("retrieval_r1",), evals: int = 3) -> RunSummary:
    """`n` members 2.2× apart in cost (from 3e11 FLOPs); chain stages after the first cost 25 % of going alone."""
    cfg = RunConfig(name=f"toy{n}", chain=tuple(MemberConfig(model=NAMES[i], epochs=8 if i == 0 else 2)
                                                for i in range(n)), baseline_epochs=8)
    alone = [3e11 * 2.2**i for i in range(n)]

    def row(i: int, method: str, flops: float, offset: float) -> StageRow:
        hist = [{"flops": flops * (k + 1) / evals, "epoch": k + 1, **{m: 10.0 + 5 * i + k for m in metrics}}
                for k in range(evals)]
        return StageRow(model=NAMES[i], method=method, epochs=8, flops=flops, cumulative_flops=offset + flops,
                        wall_s=1.0, metrics={m: hist[-1][m] for m in metrics}, history=hist)

    chain, total = [], 0.0
    for i in range(n):
        chain.append(row(i, "chain", alone[i] if i == 0 else 0.25 * alone[i], total))
        total += chain[-1].flops
    individual = [chain[0]] + [row(i, "individual", alone[i], 0.0) for i in range(1, n)]
    return RunSummary(name=cfg.name, run_dir="toy", chain=chain, individual=individual, cfg=cfg)


def assert_readable_compute_axis(ax: matplotlib.axes.Axes) -> None:
    """Log axis in one FLOPs unit, 2–6 numeric labels inside the limits, none overlapping, no minor labels."""
    assert ax.get_xscale() == "log" and ax.get_xlabel().endswith("FLOPs)")
    lo, hi = ax.get_xlim()
    renderer = ax.figure.canvas.get_renderer()
    labels = [t for t in ax.get_xticklabels() if t.get_text()]
    assert 2 <= len(labels) <= 6
    assert all(lo <= t.get_position()[0] <= hi for t in labels)
    assert all(float(t.get_text()) > 0 for t in labels)
    boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
    assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:])), [t.get_text() for t in labels]
    assert not any(t.get_text() for t in ax.get_xticklabels(minor=True))


def assert_data_inside(ax: matplotlib.axes.Axes) -> None:
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    for line in ax.get_lines():
        xs, ys = line.get_xdata(), line.get_ydata()
        if len(xs) and line.get_linestyle() in ("-", "--"):
            assert x0 < min(xs) and max(xs) < x1 and y0 < min(ys) and max(ys) < y1


@pytest.mark.parametrize("n", [1, 3, 7])
def test_accuracy_plot_without_zeroshot_has_one_readable_retrieval_panel(n: int) -> None:
    fig = accuracy_figure([toy_run(n)])
    fig.canvas.draw()
    axes = [ax for ax in fig.axes if ax.get_ylabel()]
    assert [ax.get_ylabel() for ax in axes] == ["retrieval R@1 (%)"]
    ax = axes[0]
    assert_readable_compute_axis(ax)
    assert_data_inside(ax)
    curves = [ln for ln in ax.get_lines() if len(ln.get_xdata()) and ln.get_linestyle() in ("-", "--")]
    chain = [ln for ln in curves if ln.get_linestyle() == "-"]
    individual = [ln for ln in curves if ln.get_linestyle() == "--"]
    assert len(chain) == n and len(individual) == n - 1 + 1      # member 1's baseline is chain stage 1
    assert {ln.get_marker() for ln in chain} == {"o"} and {ln.get_marker() for ln in individual} == {"s"}
    assert [ln.get_color() for ln in chain] == list(PALETTE[:n])  # one colour per member, none yellow
    boundaries = [ln for ln in ax.get_lines() if ln.get_linestyle() == ":"]
    assert len(boundaries) == n                                   # where each chain stage ends
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == list(NAMES[:n]) + ["CoM-PT chain", "individual", "chain stage ends"]


def test_accuracy_plot_has_a_panel_per_recorded_metric_and_none_without_metrics() -> None:
    fig = accuracy_figure([toy_run(4, metrics=("zeroshot_top1", "retrieval_r1"))])
    fig.canvas.draw()
    axes = [ax for ax in fig.axes if ax.get_ylabel()]
    assert [ax.get_ylabel() for ax in axes] == ["zero-shot top-1 (%)", "retrieval R@1 (%)"]
    for ax in axes:
        assert_readable_compute_axis(ax)
    assert accuracy_figure([toy_run(2, metrics=())]) is None


@pytest.mark.parametrize("n", [1, 7])
def test_cost_plot_stacks_every_stage_in_one_unit(n: int) -> None:
    run = toy_run(n)
    fig = cost_figure(run)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert len(ax.patches) == n + 1 + n                           # chain stages, largest alone, every member alone
    scale, unit = flops_unit(sum(run.individual_flops()))
    assert unit in ax.get_ylabel()
    assert ax.get_ylim()[1] > max(run.chain_flops, sum(run.individual_flops()))
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["CoM-PT chain", f"{NAMES[n - 1]} alone", "every member alone"]


def test_log_ticks_pick_the_densest_set_that_fits() -> None:
    assert log_ticks(2.5e11, 5e12) == pytest.approx([5e11, 1e12, 2e12, 5e12])
    assert log_ticks(3e11 / 1.25, 4e11 * 1.25) == pytest.approx([3e11, 5e11])   # the 3e11…4e11 run
    for lo in (1.0, 1.3, 2.1, 4.2, 6.9, 9.9):                      # any factor-4 window holds ≥ 2 ticks
        assert len(log_ticks(lo * 1e12, 4 * lo * 1e12)) >= 2
    wide = log_ticks(1e3, 1e15)                                   # 13 decades → every 3rd power of ten
    assert 2 <= len(wide) <= 6 and all(math.log10(t) == round(math.log10(t)) for t in wide)
    assert flops_unit(4e11) == (1e9, "GFLOPs") and flops_unit(2e15) == (1e15, "PFLOPs")
