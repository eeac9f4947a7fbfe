"""`compt grow --from PARENT.pt --to MODEL --op NAME --out CHILD.pt [--seed N] [--from-model NAME]`.

Initialises a larger family member from a trained smaller one with its paradigm's growth operator
(`Paradigm.grow_command`: `compt.clip.cli`, `compt.lm.cli`).
The parent's config comes from its compt checkpoint; a plain open_clip checkpoint (bare state dict, with or
without ``module.`` prefixes, or a training dict with ``state_dict``) needs ``--from-model``, or the model is
inferred by matching every key and shape against the registry. The output is a self-describing compt
checkpoint (lineage: parent path + sha256, operator, seed, stage "grow"), written atomically, plus an
``open_clip_config.json`` in the same folder so that ``open_clip.create_model('local-dir:DIR')`` builds it
(open_clip only picks up weights named ``*.pth``/``*.bin``/``*.safetensors`` there).
Every check runs before anything is written; on error nothing is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compt.errors import UserError

if TYPE_CHECKING:
    from compt.paradigm import Paradigm


def add_parser(sub: argparse._SubParsersAction) -> None:
    doc = "initialise a larger model from a trained smaller one with a growth operator (docs/method.md)"
    p = sub.add_parser("grow", help=doc, description=doc)
    p.add_argument("--from", dest="parent", required=True, metavar="PARENT.pt",
                   help="parent checkpoint (compt or open_clip), or a Hugging Face Llama folder")
    p.add_argument("--to", dest="child", required=True, metavar="MODEL",
                   help="registered child model name (CLIP or lm/…), or a Hugging Face config.json of the child")
    p.add_argument("--op", required=True, metavar="NAME",  # named here: the growth modules import torch
                   help="growth operator (compt.clip.growth.GROWTH_OPS): corner, preserve, split, stack")
    p.add_argument("--out", required=True, metavar="CHILD.pt",
                   help="output checkpoint (written atomically; must not exist yet)")
    p.add_argument("--seed", type=int, default=0, help="seed of the child's fresh init and noise (default 0)")
    p.add_argument("--from-model", metavar="NAME",
                   help="parent model for a plain open_clip checkpoint (default: infer from the shapes)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from compt.paradigm import paradigm_named

    parent_path, out = Path(args.parent), Path(args.out)
    if args.op == "prune":
        raise UserError("--op prune: pruning measures importance on calibration data; use compt prune --from "
                        "BIG.pt --to MODEL --out SMALL.pt")
    paradigm = command_paradigm(args)
    if out.exists() and out.resolve() == parent_path.resolve():
        raise UserError("--out must not overwrite the parent checkpoint")
    if out.exists():
        raise UserError(f"--out {out} already exists; choose another path, or delete it first to replace it")
    ckpt = read_parent(paradigm, parent_path)
    if ckpt.paradigm != paradigm.name:
        raise UserError(f"{parent_path} holds a {paradigm_named(ckpt.paradigm).label} and {args.child} is a "
                        f"{paradigm.label}: a chain grows within one paradigm")
    return paradigm.grow_command(args, ckpt)


def native_paradigm(path: Path) -> Paradigm | None:
    """The paradigm that reads `path` as a model in its field's own format (`Paradigm.reads_native`), if any."""
    from compt.paradigm import paradigms

    return next((p for p in paradigms() if p.reads_native(path)), None)


def command_paradigm(args: argparse.Namespace) -> Paradigm:
    """The paradigm of ``compt grow`` / ``compt prune``: the one that reads ``--to`` or a folder ``--from`` in its
    field's own format, else the one whose registry holds ``--to``."""
    from compt.paradigm import paradigm_of

    parent = Path(args.parent)
    native = native_paradigm(Path(args.child)) or (native_paradigm(parent) if parent.is_dir() else None)
    return native or paradigm_of(args.child)


def read_parent(paradigm: Paradigm, parent: Path) -> Any:
    """``--from`` as a `compt.checkpoint.Checkpoint`: a folder in `paradigm`'s field's own format, else a compt
    (or plain open_clip) checkpoint file."""
    from compt.checkpoint import load_checkpoint

    return paradigm.read_native(parent) if parent.is_dir() else load_checkpoint(parent)


def lineage(args: argparse.Namespace, parent_name: str, **extra: Any) -> dict:
    """The lineage of a checkpoint made from ``--from`` by ``args.op`` (the parent's path, sha256 and model;
    `extra`: more records, e.g. the tokenizer)."""
    from compt.checkpoint import sha256_file

    parent = Path(args.parent)
    weights = parent if parent.is_file() else next(iter(sorted(parent.glob("*.safetensors"))), None)
    return {"parent": str(parent.resolve()), "parent_sha256": sha256_file(weights) if weights else "",
            "parent_model": parent_name, "operator": args.op, "seed": args.seed, "stage": "grow", **extra}
