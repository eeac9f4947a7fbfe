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
    from compt.commands.grow import command_paradigm, read_parent
    from compt.distributed import user_device
    from compt.paradigm import paradigm_named
    from compt.prune import CALIBRATION_SAMPLES, calibration_batch

    parent_path, out = Path(args.parent), Path(args.out)
    if out.exists():
        raise UserError(f"--out {out} already exists; choose another path, or delete it first to replace it")
    if args.samples is not None and args.samples < 1:
        raise UserError(f"--samples must be positive, got {args.samples}")
    samples, device = args.samples or CALIBRATION_SAMPLES, str(user_device(args.device))
    paradigm = command_paradigm(args)
    ckpt = read_parent(paradigm, parent_path)
    if ckpt.paradigm != paradigm.name:
        raise UserError(f"{parent_path} holds a {paradigm_named(ckpt.paradigm).label} and {args.child} is a "
                        f"{paradigm.label}: pruning stays within one paradigm")
    parent_cfg, child_cfg, note = paradigm.prune_pair(args, ckpt)
    with tempfile.TemporaryDirectory(prefix="compt-prune-") as tmp:
        dataset, described, tokenizer = paradigm.calibration_set(args, ckpt, parent_cfg, samples, tmp)
        batch = calibration_batch(dataset, args.seed, samples)
    state, record = paradigm.prune(ckpt.state_dict, parent_cfg, child_cfg, batch, device)
    _write(args, paradigm, parent_cfg, child_cfg, state, record, {"data": described, "samples": len(batch[0])},
           tokenizer)
    print(note)
    print(f"pruned {parent_cfg.name} -> {child_cfg.name} on {len(batch[0])} calibration samples of {described} "
          f"(seed {args.seed}): {out}  [kept indices: {out.with_name(out.stem + '.prune.json').name}]")
    return 0


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
    paradigm.write_native(child_cfg, state, out, tokenizer)

