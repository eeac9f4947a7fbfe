"""`compt grow --from PARENT.pt --to MODEL --op NAME --out CHILD.pt [--seed N] [--from-model NAME]`.

Initialises a larger family member from a trained smaller one with a growth operator (`compt.clip.growth`).
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
import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compt.errors import UserError

if TYPE_CHECKING:
    from compt.checkpoint import Checkpoint
    from compt.clip.models import ModelConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    doc = "initialise a larger model from a trained smaller one with a growth operator (docs/method.md)"
    p = sub.add_parser("grow", help=doc, description=doc)
    p.add_argument("--from", dest="parent", required=True, metavar="PARENT.pt",
                   help="parent checkpoint (compt or open_clip), or a Hugging Face Llama folder")
    p.add_argument("--to", dest="child", required=True, metavar="MODEL",
                   help="registered child model name (CLIP or lm/…), or a Hugging Face config.json of the child")
    p.add_argument("--op", required=True, metavar="NAME",  # named here: compt.clip.growth imports torch
                   help="growth operator (compt.clip.growth.GROWTH_OPS): corner, preserve, split, stack")
    p.add_argument("--out", required=True, metavar="CHILD.pt",
                   help="output checkpoint (written atomically; must not exist yet)")
    p.add_argument("--seed", type=int, default=0, help="seed of the child's fresh init and noise (default 0)")
    p.add_argument("--from-model", metavar="NAME",
                   help="parent model for a plain open_clip checkpoint (default: infer from the shapes)")
    p.set_defaults(func=run)


def parent_config(ckpt: Checkpoint, from_model: str | None) -> tuple[ModelConfig, str]:
    """The parent's config and a note on where it came from (checkpoint, --from-model or inference)."""
    from compt.clip.models import get_model_config

    if ckpt.model_config is not None:
        if from_model and get_model_config(from_model).to_open_clip() != ckpt.model_config.to_open_clip():
            raise UserError(f"--from-model {from_model} contradicts the checkpoint's own model "
                            f"{ckpt.model_config.name}")
        return ckpt.model_config, f"parent model {ckpt.model_config.name} (from the checkpoint)"
    if from_model:
        return get_model_config(from_model), f"parent model {from_model} (--from-model)"
    from compt.clip.growth.infer import infer_model_config

    cfg, same = infer_model_config(ckpt.state_dict)
    also = f"; same architecture as {', '.join(same)}" if same else ""
    return cfg, f"inferred parent model {cfg.name} from the checkpoint's shapes{also}"


def check_config_folder(out: Path, child_cfg: ModelConfig) -> None:
    """The folder's `open_clip_config.json` describes one model: refuse to overwrite it with another's."""
    existing = out.parent / "open_clip_config.json"
    if not existing.is_file():
        return
    try:
        same = json.loads(existing.read_text()).get("model_cfg") == json.loads(json.dumps(child_cfg.to_open_clip()))
    except (json.JSONDecodeError, AttributeError):
        same = False
    if not same:
        raise UserError(f"{existing} already describes another model (open_clip's local-dir: reads one config per "
                        f"folder); put {child_cfg.name} in its own folder with --out")


def run(args: argparse.Namespace) -> int:
    from compt.checkpoint import load_checkpoint
    from compt.paradigm import paradigm_named, paradigm_of

    parent_path, out = Path(args.parent), Path(args.out)
    if args.op == "prune":
        raise UserError("--op prune: pruning measures importance on calibration data; use compt prune --from "
                        "BIG.pt --to MODEL --out SMALL.pt")
    hf_child = args.child.endswith(".json") or Path(args.child).is_dir()   # a Hugging Face config of the child
    paradigm = paradigm_named("lm") if hf_child or parent_path.is_dir() else paradigm_of(args.child)
    if out.exists() and out.resolve() == parent_path.resolve():
        raise UserError("--out must not overwrite the parent checkpoint")
    if out.exists():
        raise UserError(f"--out {out} already exists; choose another path, or delete it first to replace it")
    ckpt = hf_checkpoint(parent_path) if parent_path.is_dir() else load_checkpoint(parent_path)
    if ckpt.paradigm != paradigm.name:
        raise UserError(f"{parent_path} holds a {paradigm_named(ckpt.paradigm).label} and {args.child} is a "
                        f"{paradigm.label}: a chain grows within one paradigm")
    return grow_clip(args, ckpt) if paradigm.name == "clip" else grow_lm(args, ckpt)


def hf_checkpoint(folder: Path) -> Checkpoint:
    """A Hugging Face Llama folder read as a compt checkpoint (its config from config.json, its weights)."""
    from compt.checkpoint import Checkpoint
    from compt.lm.models import config_from_hf, require_transformers
    from compt.lm.tokenizers import init_record

    cfg = config_from_hf(folder)
    require_transformers()
    from transformers import AutoModelForCausalLM

    state = AutoModelForCausalLM.from_pretrained(folder).state_dict()
    record = init_record(folder)   # its own tokenizer, when it holds one
    return Checkpoint(state_dict=state, model_config=cfg, path=str(folder), paradigm="lm",
                      lineage={"tokenizer": record} if record else {})


def lineage(args: argparse.Namespace, parent_name: str, **extra: Any) -> dict:
    """The lineage of a checkpoint made from ``--from`` by ``args.op`` (the parent's path, sha256 and model;
    `extra`: more records, e.g. the tokenizer)."""
    from compt.checkpoint import sha256_file

    parent = Path(args.parent)
    weights = parent if parent.is_file() else next(iter(sorted(parent.glob("*.safetensors"))), None)
    return {"parent": str(parent.resolve()), "parent_sha256": sha256_file(weights) if weights else "",
            "parent_model": parent_name, "operator": args.op, "seed": args.seed, "stage": "grow", **extra}


def grow_clip(args: argparse.Namespace, ckpt: Checkpoint) -> int:
    """An open_clip child: compt checkpoint plus ``open_clip_config.json`` (plain open_clip parents too)."""
    from compt.checkpoint import save_checkpoint
    from compt.clip.growth import get_operator, grow
    from compt.clip.models import get_model_config, write_open_clip_config

    get_operator(args.op)
    child_cfg, out = get_model_config(args.child), Path(args.out)
    check_config_folder(out, child_cfg)
    parent_cfg, note = parent_config(ckpt, args.from_model)
    # a SigLIP parent (learnable logit bias) grows into the SigLIP variant of the named child
    child_cfg = dataclasses.replace(child_cfg, init_logit_bias=parent_cfg.init_logit_bias)
    state = grow(ckpt.state_dict, parent_cfg, child_cfg, args.op, args.seed)
    save_checkpoint(out, state_dict=state, model_config=child_cfg, lineage=lineage(args, parent_cfg.name))
    config = write_open_clip_config(child_cfg, out.parent)
    print(note)
    print(f"grew {parent_cfg.name} -> {child_cfg.name} with {args.op} (seed {args.seed}): {out}  [{config.name}]")
    return 0


def grow_lm(args: argparse.Namespace, ckpt: Checkpoint) -> int:
    """A language-model child: compt checkpoint plus a Hugging Face folder ``<out stem>-hf/`` that transformers
    loads, and the growth checked on a few random sequences (the largest logit difference to the parent)."""
    import torch

    from compt.checkpoint import save_checkpoint
    from compt.lm.growth import grow_lm as grow
    from compt.lm.models import config_from_hf, create_lm, export_pretrained, require_transformers
    from compt.paradigm import paradigm_named

    require_transformers()
    if args.from_model:
        raise UserError("--from-model names the model of a plain open_clip checkpoint; a compt language-model "
                        "checkpoint carries its own config")
    parent_cfg, out = ckpt.model_config, Path(args.out)
    child_cfg = (config_from_hf(args.child, name=f"hf:{Path(args.child).resolve().parent.name}")
                 if args.child.endswith(".json") or Path(args.child).is_dir()
                 else paradigm_named("lm").grown_config(parent_cfg, args.child))
    tokenizer, record = child_tokenizer(args, ckpt, child_cfg)
    state = grow(ckpt.state_dict, parent_cfg, child_cfg, args.op, args.seed)
    save_checkpoint(out, state_dict=state, model_config=child_cfg,
                    lineage=lineage(args, parent_cfg.name, **({"tokenizer": record} if record else {})))
    hf = export_pretrained(child_cfg, state, out.parent / f"{out.stem}-hf", tokenizer=tokenizer)
    ids = torch.randint(0, parent_cfg.vocab_size, (4, parent_cfg.context_length),
                        generator=torch.Generator().manual_seed(args.seed))
    with torch.no_grad():
        gap = (create_lm(child_cfg, state_dict=state).eval()(input_ids=ids).logits
               - create_lm(parent_cfg, state_dict=ckpt.state_dict).eval()(input_ids=ids).logits).abs().max().item()
    print(f"grew {parent_cfg.name} -> {child_cfg.name} with {args.op} (seed {args.seed}): {out}  [Hugging Face: {hf}]")
    print(f"check: largest |child − parent| logit on 4 random sequences = {gap:.2e}"
          + (" (function-preserving)" if gap < 1e-4 else ""))
    return 0


def child_tokenizer(args: argparse.Namespace, ckpt: Checkpoint, child_cfg: Any) -> tuple[Any, dict | None]:
    """(the tokenizer the child inherits, its lineage record): the parent's (`compt.lm.evaluate.checkpoint_tokenizer`;
    None where it cannot be found, the record then as the parent's lineage has it). A ``--to`` Hugging Face folder
    with a tokenizer other than the parent's, or a child vocabulary that does not hold the tokenizer, is refused."""
    from compt.lm.evaluate import checkpoint_tokenizer
    from compt.lm.tokenizers import TOKENIZER_FILE, check_fits, check_same, load_hf

    tokenizer = checkpoint_tokenizer(ckpt)
    record = tokenizer.record() if tokenizer is not None else ckpt.lineage.get("tokenizer")
    child = Path(args.child)
    if child.is_dir() and (child / TOKENIZER_FILE).is_file():
        check_same(record, load_hf(child), f"--from {args.parent}", "; a grown member keeps its parent's tokenizer")
    if tokenizer is not None:
        check_fits(tokenizer, {child_cfg.name: child_cfg.vocab_size})
    return tokenizer, record
