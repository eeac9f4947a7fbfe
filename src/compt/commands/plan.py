"""`compt plan CONFIG [key=value …] [--json]`: the paper-style cost plan of a chain, before any training."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    doc = "cost of a chain vs individual training: FLOPs, reduction, acceleration (docs/method.md)"
    p = sub.add_parser("plan", help=doc, description=doc)
    p.add_argument("config", help="run config (TOML)")
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                   help="config overrides, e.g. chain.1.epochs=30")
    p.add_argument("--teacher-cache", action="store_true", help="price the teacher forward once, not per epoch")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from compt.config import load_config
    from compt.plan import format_plan, plan_chain

    cfg = load_config(args.config, args.overrides)
    plan = plan_chain(cfg, cached_teacher=args.teacher_cache)
    if args.json:
        print(json.dumps({"name": cfg.name, **plan.to_dict()}, indent=2))
    else:
        print(format_plan(plan, cfg.name))
    return 0
