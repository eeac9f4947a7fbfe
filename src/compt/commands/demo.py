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

from compt.chain import train_chain
from compt.config import load_config
from compt.report import write_report


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train a tiny family (chain + baselines) on the embedded data and report")
    p.add_argument("--quick", action="store_true", help="a ≤ 1 minute smoke run on the test-size family")
    p.add_argument("--run-dir", help="output folder (default: runs/demo or runs/demo-quick)")
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value", help="config overrides")
    p.set_defaults(func=run)


def demo_config_path(quick: bool) -> Path:
    return Path(str(resources.files("compt") / "configs" / ("demo-quick.toml" if quick else "demo.toml")))


def run(args: argparse.Namespace) -> int:
    path = demo_config_path(args.quick)
    cfg = load_config(path, args.overrides)
    run_dir = Path(args.run_dir or Path("runs") / cfg.name)
    members = " → ".join(m.model for m in cfg.chain)
    print(f"compt demo: chain {members} and each member individually, on the embedded synthetic corpus "
          f"({cfg.data.num_samples:,} pairs); output in {run_dir}")
    t0 = time.perf_counter()
    train_chain(cfg, run_dir, baselines=True)
    out, md = write_report([run_dir])
    print()
    print(md)
    print(f"report: {out / 'report.md'}")
    print(f"plots:  {out / 'accuracy_vs_compute.png'}  {out / 'cost_breakdown.png'}")
    print(f"demo finished in {time.perf_counter() - t0:.0f} s")
    return 0
