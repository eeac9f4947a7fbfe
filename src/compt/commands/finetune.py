"""`compt finetune RUN_DIR|CHECKPOINT --data KIND[:ARG] [--mode full|linear] [recipe options]`.

Fine-tunes the image tower of every finished member of a CLIP run (chain stages and individual baselines) with a
linear head on a labelled set and writes the held-out top-1 to ``RUN/finetune/<member>/<dataset>[-linear].json``
(the paradigm that fine-tunes, `compt.paradigm.finetuner`: `Paradigm.finetune`; CLIP's is
`compt.clip.finetune.runner`); `compt report RUN_DIR` then shows chain | individual | Δ. The recipe's options are
the fields of `Paradigm.finetune_defaults` (CLIP's recipe and its math: `compt.clip.finetune.recipe`).
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from compt.paradigm import Paradigm

RECIPE = (("epochs", int, "epochs"), ("batch-size", int, "batch size"), ("lr", float, "peak lr of the head"),
          ("min-lr", float, "cosine floor"), ("warmup-epochs", float, "linear warmup"),
          ("weight-decay", float, "AdamW weight decay (not on gains, biases, norms)"),
          ("layer-decay", float, "layer-wise lr decay: block l of L trains at lr·decay^(L+1−l), embeddings l=0, "
                                 "head L+1"),
          ("label-smoothing", float, "label smoothing ε"),
          ("ema", float, "EMA decay of the evaluated weights, 0 = off"),
          ("train-samples", int, "at most this many training images"),
          ("eval-samples", int, "held-out images (a folder holds out min(N, n/5))"),
          ("seed", int, "data draw, split and order"))


def add_parser(sub: argparse._SubParsersAction) -> None:
    doc = ("fine-tune every member's image tower with a linear head on a labelled set; results per member in "
           "RUN/finetune (docs/benchmark.md)")
    p = sub.add_parser("finetune", help=doc, description=doc + ". Recipe: AdamW, linear warmup + cosine, layer-wise "
                       "lr decay, label smoothing, optional EMA; no augmentation; the held-out split is disjoint "
                       "from the training split and fixed by --seed. Resumable: finished members are skipped, a "
                       "killed one resumes from its last finished epoch.")
    p.add_argument("target", metavar="RUN_DIR|CHECKPOINT", help="a CLIP run directory, or one compt checkpoint")
    p.add_argument("--data", default="synthetic", metavar="KIND[:ARG]",
                   help="synthetic[:shape|colour|count|size|position] (default: synthetic, its 8 shapes), "
                        "fashion-mnist[:ROOT] (default ROOT /usr/share/datasets/fashion-mnist), folder:PATH "
                        "(PATH/<class>/*.jpg)")
    p.add_argument("--mode", default="full", choices=("full", "linear"),
                   help="full: tower + head (default); linear: frozen tower, trained head")
    from compt.paradigm import finetuner

    defaults = finetuner().finetune_defaults()
    for flag, kind, text in RECIPE:
        default = getattr(defaults, flag.replace("-", "_"))
        p.add_argument(f"--{flag}", type=kind, default=None, help=f"{text} (default {default:g})")
    p.add_argument("--redo", action="store_true", help="redo members that have a result (e.g. with other settings)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def target_paradigm(target: str) -> Paradigm:
    """The paradigm of a run directory or compt checkpoint `target` when it fine-tunes, else
    `compt.paradigm.finetuner` (which then reports what it cannot read)."""
    from compt.checkpoint import load_checkpoint
    from compt.config import read_run_config
    from compt.paradigm import finetuner, paradigm_for_run, paradigm_named

    path = Path(target)
    own = None
    if (path / "config.toml").is_file():
        own = paradigm_for_run(read_run_config(path))
    elif path.is_file():
        own = paradigm_named(load_checkpoint(path, mmap=True).paradigm)
    return own if own is not None and own.finetune_defaults() is not None else finetuner()


def run(args: argparse.Namespace) -> int:
    """The settings given on the command line; the others are the fine-tuning paradigm's defaults."""
    settings = {name: getattr(args, name) for name in (flag.replace("-", "_") for flag, _, _ in RECIPE)
                if getattr(args, name) is not None}
    results = target_paradigm(args.target).finetune(args.target, data=args.data, mode=args.mode, redo=args.redo,
                                                    progress=not args.no_progress, **settings)
    width = max(len(r["member"] or r["checkpoint"]) for r in results)
    print(f"\n{'member':<{width}}  {'top-1 %':>7}  ({results[0]['dataset']}, {args.mode})")
    for r in results:
        print(f"{r['member'] or r['checkpoint']:<{width}}  {r['top1']:7.2f}")
    print(f"`compt report {shlex.quote(args.target)}` tabulates chain against individual")
    return 0
