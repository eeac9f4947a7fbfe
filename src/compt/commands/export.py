"""`compt export RUN_DIR|CHECKPOINT --out DIR [--model NAME]`.

Writes open_clip ``local-dir`` folders (``open_clip_config.json`` + ``open_clip_model.safetensors``) that load
with plain open_clip, no compt needed: ``open_clip.create_model_and_transforms('local-dir:DIR/…')``. A run
directory exports every finished member under its run layout (``chain/0i-<model>``, ``baselines/<model>``)
and a ``members.json`` index; a single checkpoint exports into DIR itself. Language-model runs and checkpoints
(`compt.lm`) export as Hugging Face folders: ``transformers.AutoModelForCausalLM.from_pretrained('DIR/…')``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from compt.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    doc = ("export a run or checkpoint as open_clip local-dir folders, Hugging Face folders for language models "
           "(docs/benchmark.md)")
    p = sub.add_parser("export", help=doc, description=doc)
    p.add_argument("source", metavar="RUN_DIR|CHECKPOINT", help="a compt run directory or one checkpoint (.pt)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--model", default="", metavar="NAME", help="model name of a plain open_clip checkpoint")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from compt.export import PROVENANCE_FILE, export_checkpoint, export_run
    from compt.paradigm import paradigm_of

    source, out = Path(args.source), Path(args.out)
    if source.is_dir():
        if args.model:
            raise UserError("--model is only for a single plain open_clip checkpoint")
        done = export_run(source, out)
        for member, folder in done:
            print(f"{member.model:<16} {'+'.join(member.methods):<17} {_where(member.model, folder)}")
        model = done[0][0].model
    else:
        folder = export_checkpoint(source, out, model_name=args.model)
        model = json.loads((folder / PROVENANCE_FILE).read_text())["model"]
        print(_where(model, folder))
    print(paradigm_of(model).load_help())
    return 0


def _where(model: str, folder: Path) -> str:
    from compt.paradigm import paradigm_of

    return paradigm_of(model).load_hint(folder)
