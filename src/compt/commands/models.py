"""`compt models [--family NAME] [--json]`: the registry with parameters and GFLOPs.

Without ``--family`` it lists compt's own families (CLIP and language models), which needs no torch and answers
at once; upstream open_clip's ViT configs (``--family open_clip``) need open_clip imported, which takes seconds.
"""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    doc = "list the registered models and families: shapes, parameters, GFLOPs (docs/method.md)"
    p = sub.add_parser("models", help=doc, description=doc)
    p.add_argument("--family", help="one family (paper, paper-swin, tiny, test, test-swin, lm-cpu, lm-pythia, "
                                    "lm-test), or open_clip: upstream open_clip's ViT configs")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from compt.errors import unknown_name
    from compt.paradigm import paradigms

    found = paradigms(installed=True)   # the built-ins and those of the compt.paradigms entry points
    listings = [x for x in (p.listing(args.family) for p in found) if x is not None]
    if not listings:
        families = [f for p in found for f in p.listed_families()]
        raise unknown_name("family", args.family, families)
    if args.json:
        families = {k: list(v) for p in found for k, v in p.families().items()}
        print(json.dumps({"families": families, **{key: rows for key, rows, _ in listings}}, indent=2))
        return 0
    print("\n\n".join("\n".join(lines) for _, _, lines in listings))
    return 0
