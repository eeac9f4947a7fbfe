"""Time and peak memory of the growth operators on the paper's real shapes (CPU).

    .venv/bin/python benchmarks/bench_growth.py [--pairs paper/ViT-S-16:paper/ViT-B-16 ...]
                                                [--ops corner preserve] [--threads 1 2]
                                                [--out benchmarks/results/growth.md]

Each (pair, operator, thread count) runs in its own fresh Python process so that peak RSS is its own. The
worker builds the parent, randomises it the way training would (non-constant LayerNorm gains, ln_pre
included, so `preserve` takes its general path, not the constant-gain shortcut), resets the kernel's
high-water mark (``/proc/self/clear_refs``), then times ``compt.clip.growth.grow`` — which includes building and
initialising the fresh child — and reads ``VmHWM`` from ``/proc/self/status``. Reported:

- ``grow s``: wall time of `grow` (of which ``fresh init s``: open_clip's own init of the child);
- ``peak GiB``: the process's peak RSS during `grow` (Python + torch + the parent + the child + temporaries);
- ``peak × child``: peak RSS / the child's parameter memory (fp32 state dict bytes); the budget is ~3×;
- ``Δ × child``: (peak − RSS before `grow`) / child parameter memory — what growth itself adds on top of the
  process and the parent already in memory (the child's own tensors included).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_PAIRS = ("paper/ViT-S-16:paper/ViT-B-16", "paper/ViT-B-16:paper/ViT-L-16")
NOTES = """Notes:
- `transfer s` = `grow s` − `fresh init s`: the operator's own work. The fresh child init is open_clip's
  (mostly `nn.Linear`'s kaiming `uniform_`), which every operator needs for the parts it does not overwrite.
- `Δ × child`: what growth itself allocates, in units of the child's tensors (temporaries above 1); `peak ×
  child` adds the process baseline (Python + torch + open_clip, `RSS before`) and the parent. The measured
  ranges are in the line below the table.
- `preserve` runs its transfer single-threaded (`compt.growth.one_thread`): it is memory-bound
  elementwise work plus thin matmuls, and on this shared, oversubscribed 2-core box OpenMP barriers made the
  2-thread transfer 3–8× slower before that change (e.g. B → L 34 s instead of 10.7 s). The vision stream
  map E is applied as the closed-form mean-padding map plus a rank-≈20 correction (truncated at 1e-13
  relative), so no dense w'×w product is needed per weight.
"""


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def worker(pair: str, op: str, threads: int) -> dict:
    """One measurement in this (fresh) process; returns a JSON-able row."""
    import torch

    torch.set_num_threads(threads)
    import compt.clip.growth.common as common
    from compt.clip.growth import grow
    from compt.clip.models import build_model, get_model_config

    parent_name, child_name = pair.split(":")
    pcfg, ccfg = get_model_config(parent_name), get_model_config(child_name)
    torch.manual_seed(0)
    parent = build_model(pcfg)
    with torch.no_grad():
        for name, p in parent.named_parameters():
            if name.endswith("weight") and p.dim() == 1:            # LayerNorm gains, as after training
                p.copy_(1 + 0.3 * torch.randn_like(p))
    state = parent.state_dict()
    fresh_s = []
    real_fresh = common.fresh_child

    def timed_fresh(*args, **kwargs):
        t = time.perf_counter()
        out = real_fresh(*args, **kwargs)
        fresh_s.append(time.perf_counter() - t)
        return out

    common.fresh_child = timed_fresh
    rss_before = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")                   # reset VmHWM to the current RSS
    t0 = time.perf_counter()
    child = grow(state, pcfg, ccfg, op, seed=0)
    grow_s = time.perf_counter() - t0
    peak = _status_kb("VmHWM")
    child_bytes = sum(v.numel() * v.element_size() for v in child.values())
    return {"pair": f"{parent_name} → {child_name}", "op": op, "threads": threads, "grow_s": grow_s,
            "fresh_s": fresh_s[0] if fresh_s else float("nan"), "rss_before_gb": rss_before / 2**20,
            "peak_gb": peak / 2**20, "child_gb": child_bytes / 2**30, "ratio": peak * 1024 / child_bytes}


def machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    mem = _status_kb_file("/proc/meminfo", "MemTotal") / 2**20
    import torch

    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, Linux {platform.release()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def _status_kb_file(path: str, field: str) -> int:
    for line in Path(path).read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def markdown(rows: list[dict], command: str, load: str) -> str:
    out = ["# Growth operators: time and peak memory (CPU)", "",
           f"Machine: {machine()}.", f"Load average while measuring (other jobs shared the box): {load}.", "",
           f"Command: `{command}`", "",
           "Each row is a fresh process; `grow s` includes building + initialising the fresh child "
           "(`fresh init s`). Peak RSS covers the whole process (Python, torch, parent, child, temporaries).", "",
           "| pair | op | threads | grow s | fresh init s | transfer s | RSS before GiB | peak GiB "
           "| child params GiB | peak × child | Δ × child |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        delta = (r["peak_gb"] - r["rss_before_gb"]) / r["child_gb"]          # all in GiB
        out.append(f"| {r['pair']} | {r['op']} | {r['threads']} | {r['grow_s']:.1f} | {r['fresh_s']:.1f} | "
                   f"{r['grow_s'] - r['fresh_s']:.1f} | {r['rss_before_gb']:.2f} | {r['peak_gb']:.2f} | "
                   f"{r['child_gb']:.2f} | {r['ratio']:.2f} | {delta:.2f} |")
    deltas = [(r["peak_gb"] - r["rss_before_gb"]) / r["child_gb"] for r in rows]
    base = [r["rss_before_gb"] for r in rows]
    measured = (f"Measured here: `Δ × child` {min(deltas):.2f}–{max(deltas):.2f}, process baseline before growth "
                f"{min(base):.2f}–{max(base):.2f} GiB, over {len(rows)} runs." if rows else "No rows measured.")
    return "\n".join(out + ["", measured, "", NOTES]) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", nargs="+", default=list(DEFAULT_PAIRS), help="PARENT:CHILD model names")
    ap.add_argument("--ops", nargs="+", default=["corner", "preserve"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--out", default="benchmarks/results/growth.md")
    ap.add_argument("--worker", nargs=3, metavar=("PAIR", "OP", "THREADS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], int(args.worker[2]))))
        return
    rows = []
    for pair in args.pairs:
        for op in args.ops:
            for threads in args.threads:
                res = subprocess.run([sys.executable, __file__, "--worker", pair, op, str(threads)],
                                     capture_output=True, text=True, check=True)
                rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
                print(json.dumps(rows[-1]), flush=True)
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    command = "python benchmarks/bench_growth.py " + " ".join(sys.argv[1:])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(markdown(rows, command.strip(), load))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
