"""`compt export RUN_DIR|CHECKPOINT --out DIR [--model NAME]`.

Writes open_clip ``local-dir`` folders (``open_clip_config.json`` + ``open_clip_model.safetensors``) that load
with plain open_clip, no compt needed: ``open_clip.create_model_and_transforms('local-dir:DIR/…')``. A run
directory exports every finished member under its run layout (``chain/0i-<model>``, ``baselines/<model>``)
and a ``members.json`` index; a single checkpoint exports into DIR itself.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from compt.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write open_clip local-dir folders (config + weights) of a run or checkpoint")
    p.add_argument("source", metavar="RUN_DIR|CHECKPOINT", help="a compt run directory or one checkpoint (.pt)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--model", default="", metavar="NAME", help="model name of a plain open_clip checkpoint")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from compt.export import export_checkpoint, export_run

    source, out = Path(args.source), Path(args.out)
    if source.is_dir():
        if args.model:
            raise UserError("--model is only for a single plain open_clip checkpoint")
        for member, folder in export_run(source, out):
            print(f"{member.model:<16} {'+'.join(member.methods):<17} local-dir:{folder}")
    else:
        folder = export_checkpoint(source, out, model_name=args.model)
        print(f"local-dir:{folder}")
    print("load with: open_clip.create_model_and_transforms('local-dir:FOLDER'), "
          "open_clip.get_tokenizer('local-dir:FOLDER')")
    return 0
