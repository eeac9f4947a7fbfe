"""The fine-tuning table of `compt report` (and of benchmarks/make_results.py): read from ``RUN/finetune``.

One row per member (model), per (dataset, mode) chain | individual | Δ = chain − individual, in held-out top-1 %;
with several runs (seeds) each cell is mean ± std over the runs that have it (`compt.report.stat`) and Δ the
difference of the means. Member 1, trained once for both roles, has Δ = 0 by construction.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from compt.clip.finetune.runner import FINETUNE_DIR

Column = tuple[str, str]   # (dataset, mode)


def load_scores(run_dirs: list[str | Path]) -> dict[str, Any] | None:
    """``{"columns": [(dataset, mode)], "models": [model], "scores": {(model, method): {column: [top-1 per run]}}}``
    over the runs' ``finetune/`` results, or None when none has any."""
    columns: list[Column] = []
    order: dict[str, int] = {}
    scores: dict[tuple[str, str], dict[Column, list[float]]] = {}
    for run_dir in run_dirs:
        for f in sorted((Path(run_dir) / FINETUNE_DIR).glob("**/*.json")):
            res = json.loads(f.read_text())
            col = (res["dataset"], res["mode"])
            columns += [col] if col not in columns else []
            order.setdefault(res["model"], res.get("index", len(order)))
            for method in res.get("methods") or ["checkpoint"]:
                scores.setdefault((res["model"], method), {}).setdefault(col, []).append(float(res["top1"]))
    if not columns:
        return None
    return {"columns": columns, "models": sorted(order, key=lambda m: (order[m], m)), "scores": scores}


def format_finetune_table(ft: dict[str, Any]) -> str:
    """Markdown: a row per member; per (dataset, mode) chain | individual | Δ."""
    from compt.report import _fmt, stat

    cols = ft["columns"]
    head = ["member"] + [f"{d} {m} {h}" for d, m in cols for h in ("chain", "indiv.", "Δ")]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for model in ft["models"]:
        cells = []
        for col in cols:
            c, i = (ft["scores"].get((model, method), {}).get(col) for method in ("chain", "individual"))
            sc, si = (stat(v) if v else None for v in (c, i))
            delta = f"{sc['mean'] - si['mean']:+.1f}" if sc and si else ""
            cells += [_fmt(sc), _fmt(si), delta]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def finetune_section(run_dirs: list[str | Path], out_dir: Path) -> str:
    """The report's Markdown section ("" without fine-tuning results); writes finetune.json beside it."""
    ft = load_scores(run_dirs)
    if ft is None:
        return ""
    dump = {"columns": [list(c) for c in ft["columns"]], "models": ft["models"],
            "scores": [{"model": m, "method": meth, "top1": [[*c, v] for c, v in s.items()]}
                       for (m, meth), s in ft["scores"].items()]}
    (out_dir / "finetune.json").write_text(json.dumps(dump, indent=2) + "\n")
    runs = f" (mean ± std over {len(run_dirs)} runs)" if len(run_dirs) > 1 else ""
    return (f"\n## Fine-tuning (`compt finetune`)\n\nHeld-out top-1 (%) after fine-tuning each member's image tower "
            f"with a linear head (full: tower + head; linear: frozen tower){runs}; Δ = chain − individual.\n\n"
            f"{format_finetune_table(ft)}\n")
