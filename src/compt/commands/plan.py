"""`compt plan CONFIG [key=value …] [--json]`: the paper-style cost plan of a chain, before any training."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    doc = "cost of a chain vs individual training: FLOPs, reduction, acceleration (docs/method.md)"
    p = sub.add_parser("plan", help=doc, description=doc)
    p.add_argument("config", help="run config (TOML)")
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                   help="config overrides, e.g. chain.1.epochs=30")
    p.add_argument("--teacher-cache", action="store_true", help="price the teacher forward once, not per epoch")
    p.add_argument("--json", action="store_true", help="print JSON")
    feed = p.add_argument_group("loader check (a warning per member the loader likely cannot feed; docs/cluster.md)")
    feed.add_argument("--loader-ms", type=float, default=3.0, metavar="MS",
                      help="loader cost per sample per worker in ms (default 3: CC3M at 224 px, 7 captions)")
    feed.add_argument("--peak-tflops", type=float, default=989.0, metavar="T",
                      help="accelerator dense bf16 peak in TFLOP/s (default 989: H100 SXM)")
    feed.add_argument("--mfu", type=float, default=0.4, help="fraction of the peak a step reaches (default 0.4)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from compt.config import load_config
    from compt.errors import UserError
    from compt.plan import FeedAssumptions, feed_warnings, format_plan, plan_chain

    if not (args.loader_ms > 0 and args.peak_tflops > 0 and 0 < args.mfu <= 1):
        raise UserError("--loader-ms and --peak-tflops must be positive, --mfu in (0, 1]")
    cfg = load_config(args.config, args.overrides)
    plan = plan_chain(cfg, cached_teacher=args.teacher_cache)
    warnings = feed_warnings(cfg, plan, FeedAssumptions(args.loader_ms, args.peak_tflops, args.mfu))
    if args.json:
        print(json.dumps({"name": cfg.name, **plan.to_dict(), "warnings": warnings}, indent=2))
    else:
        print(format_plan(plan, cfg.name, cfg.paradigm))
    for line in warnings:
        print(f"compt plan: {line}", file=sys.stderr)
    return 0
