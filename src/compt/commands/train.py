"""`compt train CONFIG [key=value …]`: run a chain (and optionally the individual baselines).

Works unchanged as a single process or under ``torchrun --nproc_per_node N``. Re-running the same command
resumes: finished stages are skipped and an interrupted stage continues from its last checkpoint.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    doc = "train a model family as a CoM-PT chain, resumably (docs/configs.md, docs/cluster.md)"
    p = sub.add_parser("train", help=doc, description=doc)
    p.add_argument("config", help="run config (TOML)")
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                   help="config overrides, e.g. train.lr=5e-4")
    p.add_argument("--run-dir", help="output folder (default: runs/<name>)")
    p.add_argument("--baselines", action="store_true", default=None, help="also train every member individually")
    p.add_argument("--from-stage", help="rerun from this stage (e.g. chain-3), discarding it and what follows")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from compt import distributed as dist
    from compt.chain import train_run
    from compt.config import load_config

    cfg = load_config(args.config, [*args.overrides, *(["baselines=true"] if args.baselines else [])])
    run_dir = Path(args.run_dir or Path("runs") / cfg.name)
    dist.init_distributed()
    try:
        train_run(cfg, run_dir, baselines=args.baselines, from_stage=args.from_stage,
                    progress=not args.no_progress)
    finally:
        dist.shutdown()
    if dist.is_main():
        print(f"done: {run_dir}  (next: compt report {shlex.quote(str(run_dir))})")
    return 0
