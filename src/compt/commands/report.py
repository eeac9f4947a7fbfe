"""`compt report RUN_DIR [RUN_DIR …]`: paper-style table (Markdown + JSON) and PNG plots."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    doc = "table and plots of one run, or of several runs (seeds) as mean ± std (docs/runs.md)"
    p = sub.add_parser("report", help=doc, description=doc)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", help="output folder (default: RUN_DIR/report)")
    p.add_argument("--json", action="store_true", help="print the JSON summary instead of Markdown")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from compt.report import write_report

    out, md = write_report(args.run_dirs, args.out)
    if args.json:
        print((out / "report.json").read_text())
    else:
        print(md)
        print(f"written: {out / 'report.md'}, {out / 'report.json'}")
        for plot in json.loads((out / "report.json").read_text())["plots"]:
            print(f"plot: {out / plot}")
    return 0
