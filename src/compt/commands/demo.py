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

# what the CLIP demo shows, in one line (issue 17: the demo stays until a configuration that fits its 10 minutes
# shows the paper's >= 4x at parity; docs/results.md "When does CoM-PT pay off?" has the measured map)
WHAT_IT_SHOWS = ("what this shows: the whole pipeline on a short schedule (8-epoch baselines, 2.5 epochs per grown "
                 "member, ~2.5x family acceleration), where the chain stays close to but not reliably above its "
                 "baselines; the paper's >= 4x at parity is not reproduced at this scale (docs/results.md, "
                 "'When does CoM-PT pay off?')")
WHAT_THE_LM_DEMO_SHOWS = ("what this shows: a Llama family chain on ~80 k tokens (4-epoch baselines, 1 epoch per grown "
                          "member, ~2.9x family acceleration); at this size every baseline is far from trained, so the "
                          "grown members' head start wins on held-out loss — docs/results.md ('lm') has the 4-member, "
                          "2-seed study and what it does not show")


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
    from compt.report import write_report

    path = demo_config_path(args.quick, args.lm)
    cfg = load_config(path, args.overrides)
    run_dir = Path(args.run_dir or Path("runs") / cfg.name)
    members = " → ".join(m.model for m in cfg.chain)
    data = f"{cfg.data.path or 'the Python standard library sources'} ({cfg.data.num_samples:,} training windows)" \
        if args.lm else \
        f"the embedded synthetic corpus ({cfg.data.num_samples:,} pairs)"
    print(f"compt demo: chain {members} and each member individually, on {data}; output in {run_dir}")
    t0 = time.perf_counter()
    train_run(cfg, run_dir, baselines=True)
    out, md = write_report([run_dir])
    print()
    print(md)
    print(f"report: {out / 'report.md'}")
    print(f"plots:  {out / 'accuracy_vs_compute.png'}  {out / 'cost_breakdown.png'}")
    if not args.quick:
        print(WHAT_THE_LM_DEMO_SHOWS if args.lm else WHAT_IT_SHOWS)
    print(f"demo finished in {time.perf_counter() - t0:.0f} s")
    return 0
