"""The per-task tables of lm-evaluation-harness results (what `compt report` adds when they exist).

Reads ``RUN/lm_eval/members.json`` and each member's ``results.json`` (`compt.lm.harness`); needs no lm-eval.
One table per task: rows are members (one per model), and per metric of the task (lm-eval's ``results[task]``
numbers, ``metric,filter`` keys without the ``_stderr`` ones) chain | individual | Δ = chain − individual.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from compt.lm.harness import HARNESS_DIR

Column = tuple[str, str]   # (task, "metric,filter") as lm-eval keys them


def task_metrics(task_results: dict[str, Any]) -> dict[str, float]:
    """The numbers of one task's lm-eval results: ``metric,filter`` → value (stderr and counts left out)."""
    return {k: float(v) for k, v in task_results.items()
            if "," in k and "_stderr" not in k and isinstance(v, (int, float)) and not isinstance(v, bool)}


def load_harness(run_dir: str | Path) -> dict[str, Any] | None:
    """``{"columns": [(task, metric)], "scores": {(model, method): {(task, metric): value}}}`` or None."""
    root = Path(run_dir) / HARNESS_DIR
    index = root / "members.json"
    if not index.is_file():
        return None
    scores: dict[tuple[str, str], dict[Column, float]] = {}
    columns: list[Column] = []
    for m in json.loads(index.read_text())["members"]:
        path = root / m["key"] / "results.json"
        results = json.loads(path.read_text())["results"] if path.is_file() else {}
        for task, values in results.items():
            for metric, value in task_metrics(values).items():
                columns += [(task, metric)] if (task, metric) not in columns else []
                for method in m["methods"]:
                    scores.setdefault((m["model"], method), {})[(task, metric)] = value
    return {"columns": columns, "scores": scores} if columns else None


def metric_label(metric: str) -> str:
    """``bits_per_byte,none`` → ``bits_per_byte``; another filter is kept: ``exact_match (strict-match)``."""
    name, _, filt = metric.partition(",")
    return name if filt in ("", "none") else f"{name} ({filt})"


def cell(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "—"


def format_task_table(harness: dict[str, Any], task: str) -> str:
    """Markdown for one task: one row per model; per metric chain | individual | Δ."""
    metrics = [m for t, m in harness["columns"] if t == task]
    head = ["member"] + [f"{metric_label(m)} {h}" for m in metrics for h in ("chain", "indiv.", "Δ")]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for model in dict.fromkeys(model for model, _ in harness["scores"]):
        chain, ind = (harness["scores"].get((model, method), {}) for method in ("chain", "individual"))
        cells = []
        for m in metrics:
            c, i = chain.get((task, m)), ind.get((task, m))
            cells += [cell(c), cell(i), f"{c - i:+.4f}" if c is not None and i is not None else ""]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def harness_section(run_dirs: list[str | Path], out_dir: Path) -> str:
    """The Markdown section for every run with lm-eval results ("" when none); writes lm_eval.json."""
    parts, dump = [], {}
    for run_dir in run_dirs:
        harness = load_harness(run_dir)
        if harness is None:
            continue
        tasks = list(dict.fromkeys(t for t, _ in harness["columns"]))
        parts.append(f"\n## lm-evaluation-harness: {run_dir}\n")
        parts += [f"\n### {task}\n\n{format_task_table(harness, task)}\n" for task in tasks]
        dump[str(run_dir)] = {"columns": [list(c) for c in harness["columns"]],
                              "scores": [{"model": m, "method": meth, "scores": [[*c, v] for c, v in s.items()]}
                                         for (m, meth), s in harness["scores"].items()]}
    if dump:
        parts.append("\nlm-evaluation-harness, fp32; held-out = the run's own held-out split (compt.lm.harness); "
                     "Δ = chain − individual.\n")
        (out_dir / "lm_eval.json").write_text(json.dumps(dump, indent=2) + "\n")
    return "".join(parts)
