"""The paper-style per-dataset table of clip_benchmark results (what `compt report` adds when they exist).

Reads ``RUN/benchmark/export/members.json`` and the clip_benchmark JSON files under ``RUN/benchmark/results``;
needs no clip_benchmark. One number per member × dataset, in percent, from clip_benchmark's own metrics:

- ``zeroshot_classification``: ``acc1`` (multi-label sets: ``mean_average_precision``); ``linear_probe``: ``lp_acc1``;
- ``zeroshot_retrieval``: R@1 = (image_retrieval_recall@1 + text_retrieval_recall@1) / 2 (t→i and i→t).

Rows are members (one per model), with chain and individual side by side per dataset, Δ = chain − individual,
and the average over the datasets both have.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from compt.clip.bench import BENCH_DIR

TASK_SHORT = {"zeroshot_classification": "zero-shot top-1", "linear_probe": "linear probe top-1",
              "zeroshot_retrieval": "retrieval R@1"}


def main_metric(task: str, metrics: dict[str, float]) -> float | None:
    """The table's number (percent) for one clip_benchmark result, None when its metric is missing."""
    if task == "zeroshot_retrieval":
        keys = ["image_retrieval_recall@1", "text_retrieval_recall@1"]
        return 100 * statistics.fmean(metrics[k] for k in keys) if all(k in metrics for k in keys) else None
    keys = {"zeroshot_classification": ("acc1", "mean_average_precision"), "linear_probe": ("lp_acc1",)}
    key = next((k for k in keys.get(task, ()) if k in metrics), None)
    return 100 * float(metrics[key]) if key is not None else None


def load_benchmark(run_dir: str | Path) -> dict[str, Any] | None:
    """``{"columns": [(dataset, task)], "scores": {(model, method): {(dataset, task): %}}}`` or None."""
    bench = Path(run_dir) / BENCH_DIR
    index = bench / "export" / "members.json"
    if not index.is_file():
        return None
    scores: dict[tuple[str, str], dict[tuple[str, str], float]] = {}
    columns: list[tuple[str, str]] = []
    for m in json.loads(index.read_text())["members"]:
        for f in sorted((bench / "results" / m["key"]).glob("*.json")):
            res = json.loads(f.read_text())
            col, value = (res["dataset"], res["task"]), main_metric(res["task"], res["metrics"])
            if value is None:
                continue
            columns += [col] if col not in columns else []
            for method in m["methods"]:
                scores.setdefault((m["model"], method), {})[col] = value
    return {"columns": columns, "scores": scores} if columns else None


def _cells(chain: dict | None, ind: dict | None, cols: list[tuple[str, str]]) -> list[str]:
    out = []
    for col in cols:
        c, i = (chain or {}).get(col), (ind or {}).get(col)
        out += [f"{c:.1f}" if c is not None else "—", f"{i:.1f}" if i is not None else "—",
                f"{c - i:+.1f}" if c is not None and i is not None else ""]
    both = [col for col in cols if col in (chain or {}) and col in (ind or {})]
    if both:
        mc, mi = (statistics.fmean(d[col] for col in both) for d in (chain, ind))  # type: ignore[union-attr]
        return out + [f"{mc:.1f}", f"{mi:.1f}", f"{mc - mi:+.1f}"]
    return out + ["—", "—", ""]


def format_benchmark_table(bench: dict[str, Any]) -> str:
    """Markdown: one row per model; per dataset chain | individual | Δ; then the average over datasets."""
    cols = bench["columns"]
    head = ["member"] + [f"{d} {h}" for d, _ in cols for h in ("chain", "indiv.", "Δ")] + ["avg chain", "avg indiv.",
                                                                                           "avg Δ"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    models = list(dict.fromkeys(model for model, _ in bench["scores"]))
    for model in models:
        cells = _cells(bench["scores"].get((model, "chain")), bench["scores"].get((model, "individual")), cols)
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    tasks = ", ".join(f"{d}: {TASK_SHORT.get(t, t)}" for d, t in cols)
    lines += ["", f"clip_benchmark, fp32 on CPU; metric per dataset ({tasks}), in %; the average is over the "
                  f"datasets a member has both numbers for."]
    return "\n".join(lines)


def benchmark_section(run_dirs: list[str | Path], out_dir: Path) -> str:
    """The Markdown section for every run with clip_benchmark results ("" when none); writes benchmark.json."""
    parts, dump = [], {}
    for run_dir in run_dirs:
        bench = load_benchmark(run_dir)
        if bench is None:
            continue
        parts.append(f"\n## clip_benchmark: {run_dir}\n\n{format_benchmark_table(bench)}\n")
        dump[str(run_dir)] = {"columns": [list(c) for c in bench["columns"]],
                              "scores": [{"model": m, "method": meth, "scores": [[*c, v] for c, v in s.items()]}
                                         for (m, meth), s in bench["scores"].items()]}
    if dump:
        (out_dir / "benchmark.json").write_text(json.dumps(dump, indent=2) + "\n")
    return "".join(parts)
