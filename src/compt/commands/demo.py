"""`compt demo [--quick]`: the main job on the embedded default data, end to end on a laptop CPU.

Trains a tiny family as a CoM-PT chain and every member individually on the embedded synthetic
image–caption corpus, then prints the paper-style table and the path of the plots. Resumable like
`compt train`.
"""

from __future__ import annotations

import argparse
import time
from importlib import resources
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    doc = "train a tiny family (chain + baselines) on the embedded data and report it (docs/runs.md)"
    p = sub.add_parser("demo", help=doc, description=doc)
    p.add_argument("--quick", action="store_true", help="a ≤ 1 minute smoke run on the test-size family")
    p.add_argument("--lm", action="store_true", help="the language-model family (Llama, lm-cpu) on an offline "
                                                     "text corpus instead of CLIP")
    p.add_argument("--run-dir", help="output folder (default: runs/demo or runs/demo-quick)")
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value", help="config overrides")
    p.set_defaults(func=run)


def demo_config_path(quick: bool, lm: bool = False) -> Path:
    name = ("demo-lm" if lm else "demo") + ("-quick" if quick else "")
    return Path(str(resources.files("compt") / "configs" / f"{name}.toml"))


def run(args: argparse.Namespace) -> int:
    from compt.chain import train_run
    from compt.config import load_config
    from compt.report import closing_line, load_run, summarise, write_report

    path = demo_config_path(args.quick, args.lm)
    cfg = load_config(path, args.overrides)
    run_dir = Path(args.run_dir or Path("runs") / cfg.name)
    members = " → ".join(m.model for m in cfg.chain)
    data = cfg.paradigm.describe_data(cfg.data)
    print(f"compt demo: chain {members} and each member individually, on {data}; output in {run_dir}")
    t0 = time.perf_counter()
    train_run(cfg, run_dir, baselines=True)
    out, md = write_report([run_dir])
    print()
    print(md)
    print(f"report: {out / 'report.md'}")
    print(f"plots:  {out / 'accuracy_vs_compute.png'}  {out / 'cost_breakdown.png'}")
    print(closing_line(summarise([load_run(run_dir)])))
    print("docs/results.md has the measured study: where the chain pays off, and where it does not")
    print(f"demo finished in {time.perf_counter() - t0:.0f} s")
    return 0
