"""`compt flops MODEL [--json]`: analytic per-sample forward FLOPs (batch 1, 1 caption) and parameters."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    doc = "forward GFLOPs per sample (image + text; LMs: a sequence) and parameters of a model (docs/method.md)"
    p = sub.add_parser("flops", help=doc, description=doc)
    p.add_argument("model")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from compt.paradigm import paradigm_of

    out = paradigm_of(args.model).flops_row(args.model)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            print(f"{k:<15} {v:.4g}" if isinstance(v, float) else f"{k:<15} {v}")
    return 0
