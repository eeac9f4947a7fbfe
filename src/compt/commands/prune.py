"""`compt prune --from BIG.pt --to MODEL --out SMALL.pt [--data KIND] [--data-path P] [--samples N] [--seed N]`.

Cuts a smaller family member out of a trained larger one (`compt.prune`; docs/method.md "Pruning down"): the
importance of every head, MLP unit, stream channel and block is measured on a calibration batch and the most
important are kept. Parents as for `compt grow`: a compt checkpoint, a plain open_clip checkpoint (``--from-model``
or inferred from its shapes) or a Hugging Face Llama folder; the child is a registered name (or, for a language
model, a Hugging Face ``config.json``). Calibration data: CLIP, ``--data KIND`` (a data kind, default synthetic)
with ``--data-path``; a language model, the text at ``--data-path`` (default: the standard library's sources)
with its run's tokenizer or ``--tokenizer FILE``. ``--samples`` samples (default 1024) are drawn by ``--seed``.

Writes the compt checkpoint (lineage: parent path + sha256, operator "prune", seed, calibration), the importance
statistics and kept indices in ``<out stem>.prune.json`` beside it, and what the field's library loads:
``open_clip_config.json`` in the folder (CLIP) or a Hugging Face folder ``<out stem>-hf/`` (language models).
Every check runs before the calibration data is read; on error nothing is written.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from compt.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    doc = "cut a smaller model out of a trained larger one by activation importance (docs/method.md)"
    p = sub.add_parser("prune", help=doc, description=doc)
    p.add_argument("--from", dest="parent", required=True, metavar="BIG.pt",
                   help="the larger model: compt or open_clip checkpoint, or a Hugging Face Llama folder")
    p.add_argument("--to", dest="child", required=True, metavar="MODEL",
                   help="registered smaller model (CLIP or lm/…), or a Hugging Face config.json of it")
    p.add_argument("--out", required=True, metavar="SMALL.pt",
                   help="output checkpoint (written atomically; must not exist yet)")
    p.add_argument("--data", default="", metavar="KIND",
                   help="calibration data kind (CLIP: a key of compt.clip.data.ADAPTERS, default synthetic; "
                        "language models: text)")
    p.add_argument("--data-path", default="", metavar="P", help="calibration CSV, shards, folder or text")
    p.add_argument("--tokenizer", default="", metavar="FILE",
                   help="language models: tokenizer.json of the calibration text (default: the run's, or bytes)")
    p.add_argument("--samples", type=int, default=None, metavar="N",
                   help="calibration samples (default 1024; fewer when the data has fewer)")
    p.add_argument("--seed", type=int, default=0, help="seed drawing the calibration samples (default 0)")
    p.add_argument("--from-model", metavar="NAME",
                   help="parent model of a plain open_clip checkpoint (default: infer from the shapes)")
    p.add_argument("--device", default="cpu", help="where the calibration forward runs: cpu (default), cuda, …")
    p.set_defaults(func=run, op="prune")


def run(args: argparse.Namespace) -> int:
    from compt.checkpoint import load_checkpoint
    from compt.commands.grow import hf_checkpoint
    from compt.distributed import user_device
    from compt.paradigm import paradigm_named, paradigm_of
    from compt.prune import CALIBRATION_SAMPLES, calibration_batch

    parent_path, out = Path(args.parent), Path(args.out)
    if out.exists():
        raise UserError(f"--out {out} already exists; choose another path, or delete it first to replace it")
    if args.samples is not None and args.samples < 1:
        raise UserError(f"--samples must be positive, got {args.samples}")
    samples, device = args.samples or CALIBRATION_SAMPLES, str(user_device(args.device))
    hf_child = args.child.endswith(".json") or Path(args.child).is_dir()
    paradigm = paradigm_named("lm") if hf_child or parent_path.is_dir() else paradigm_of(args.child)
    ckpt = hf_checkpoint(parent_path) if parent_path.is_dir() else load_checkpoint(parent_path)
    if ckpt.paradigm != paradigm.name:
        raise UserError(f"{parent_path} holds a {paradigm_named(ckpt.paradigm).label} and {args.child} is a "
                        f"{paradigm.label}: pruning stays within one paradigm")
    parent_cfg, child_cfg, note = (_clip_pair if paradigm.name == "clip" else _lm_pair)(args, ckpt)
    with tempfile.TemporaryDirectory(prefix="compt-prune-") as tmp:
        dataset, described, tokenizer = (_clip_data if paradigm.name == "clip" else _lm_data)(
            args, ckpt, parent_cfg, samples, tmp)
        batch = calibration_batch(dataset, args.seed, samples)
    state, record = paradigm.prune(ckpt.state_dict, parent_cfg, child_cfg, batch, device)
    _write(args, paradigm, parent_cfg, child_cfg, state, record, {"data": described, "samples": len(batch[0])},
           tokenizer)
    print(note)
    print(f"pruned {parent_cfg.name} -> {child_cfg.name} on {len(batch[0])} calibration samples of {described} "
          f"(seed {args.seed}): {out}  [kept indices: {out.with_name(out.stem + '.prune.json').name}]")
    return 0


def _clip_pair(args: argparse.Namespace, ckpt: Any) -> tuple[Any, Any, str]:
    """(parent config, child config, where the parent's came from), the pair checked (`validate_clip_prune`)."""
    from compt.clip.prune import validate_clip_prune
    from compt.commands.grow import check_config_folder, parent_config
    from compt.paradigm import paradigm_named

    if args.tokenizer:
        raise UserError("--tokenizer is for language models; a CLIP model's tokenizer is open_clip's")
    parent_cfg, note = parent_config(ckpt, args.from_model)
    child_cfg = paradigm_named("clip").grown_config(parent_cfg, args.child)
    check_config_folder(Path(args.out), child_cfg)
    validate_clip_prune(parent_cfg, child_cfg)
    return parent_cfg, child_cfg, note


def _lm_pair(args: argparse.Namespace, ckpt: Any) -> tuple[Any, Any, str]:
    """(parent config, child config, a note), the pair checked (`validate_lm_prune`)."""
    from compt.lm.models import config_from_hf, require_transformers
    from compt.lm.prune import validate_lm_prune
    from compt.paradigm import paradigm_named

    require_transformers()
    if args.from_model:
        raise UserError("--from-model names the model of a plain open_clip checkpoint; a language model describes "
                        "itself")
    if args.data not in ("", "text"):
        raise UserError(f"--data {args.data}: a language model calibrates on text (--data-path FILE_OR_FOLDER)")
    parent_cfg = ckpt.model_config
    child_cfg = (config_from_hf(args.child, name=f"hf:{Path(args.child).resolve().parent.name}")
                 if args.child.endswith(".json") or Path(args.child).is_dir()
                 else paradigm_named("lm").grown_config(parent_cfg, args.child))
    validate_lm_prune(parent_cfg, child_cfg)
    return parent_cfg, child_cfg, f"parent model {parent_cfg.name}"


def _clip_data(args: argparse.Namespace, _ckpt: Any, parent_cfg: Any, samples: int, _tmp: str
               ) -> tuple[Any, str, None]:
    """The calibration set of ``--data KIND --data-path P`` at the parent's image size and context."""
    from compt.clip.data import adapter, build_train_dataset
    from compt.clip.paradigm import check_data_kind
    from compt.config import DataConfig, validate_data

    kind = args.data or "synthetic"
    if adapter(kind).reads_path and not args.data_path:
        raise UserError(f"--data {kind} needs --data-path")
    data = DataConfig(kind=kind, path=args.data_path, num_samples=samples, seed=args.seed)
    validate_data(data)
    check_data_kind(data)
    return build_train_dataset(data, parent_cfg), f"{kind}{':' + args.data_path if args.data_path else ''}", None


def _lm_data(args: argparse.Namespace, ckpt: Any, parent_cfg: Any, samples: int, tmp: str) -> tuple[Any, str, Any]:
    """Every window of context + 1 tokens of the calibration text, tokenised as `compt eval --data text` does
    (with the tokenizer the parent was trained with, or ``--tokenizer`` if it is that one), and that tokenizer."""
    from compt.lm.evaluate import resolve_tokenizer
    from compt.lm.text import TokenWindows, default_corpus, tokenize_corpus

    path = Path(args.data_path) if args.data_path else default_corpus()
    tokenizer = resolve_tokenizer(ckpt, args.tokenizer)
    corpus = tokenize_corpus(path, tmp, tokenizer=tokenizer, vocab_size=parent_cfg.vocab_size)
    windows = TokenWindows(corpus.tokens, parent_cfg.context_length)
    if len(windows) == 0:
        raise UserError(f"{path} has only {corpus.tokens.size} tokens: fewer than one window of "
                        f"{parent_cfg.context_length + 1}")
    return windows, f"text {path}", tokenizer


def _write(args: argparse.Namespace, paradigm: Any, parent_cfg: Any, child_cfg: Any, state: dict,
           record: dict[str, Any], calibration: dict[str, Any], tokenizer: Any = None) -> None:
    """The checkpoint, its ``.prune.json`` record and the library's own files (module docstring)."""
    from compt.checkpoint import atomic_write_json, save_checkpoint
    from compt.commands.grow import lineage
    from compt.prune import as_lists

    out = Path(args.out)
    sidecar = out.with_name(out.stem + ".prune.json")
    extra = {"tokenizer": tokenizer.record()} if tokenizer is not None else {}
    info = {**lineage(args, parent_cfg.name, **extra), "stage": "prune", "calibration": calibration,
            "prune_record": sidecar.name}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(sidecar, {"parent": parent_cfg.name, "child": child_cfg.name, "seed": args.seed,
                                "calibration": calibration, **as_lists(record)})
    save_checkpoint(out, state_dict=state, model_config=child_cfg, lineage=info)
    if paradigm.name == "clip":
        from compt.clip.models import write_open_clip_config

        write_open_clip_config(child_cfg, out.parent)
    else:
        from compt.lm.models import export_pretrained

        export_pretrained(child_cfg, state, out.parent / f"{out.stem}-hf", tokenizer=tokenizer)

