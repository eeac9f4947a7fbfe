"""What the CLI commands do for ViT classifiers, behind the `compt.vit.paradigm` members they call: `compt eval`
(top-1 of a checkpoint on a data kind's held-out split; a checkpoint of a run, on the run's own data, is scored on
the split the run held out, so the number is the one its results record) and `compt grow` (a grown child's
checkpoint plus the folder timm loads, and the growth checked on random images).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compt.errors import UserError

if TYPE_CHECKING:
    from compt.checkpoint import Checkpoint
    from compt.config import DataConfig


def run_data(checkpoint: Path) -> DataConfig | None:
    """The data of the run whose member `checkpoint` is (``RUN/chain/<stage>/*.pt`` or ``RUN/baselines/…``: the
    nearest folder above with a ``config.toml``), else None."""
    from compt.config import read_run_config

    run = next((p for p in checkpoint.resolve().parents[1:4] if (p / "config.toml").is_file()), None)
    return read_run_config(run).data if run is not None else None


def eval_data(args: argparse.Namespace) -> DataConfig:
    """The data ``compt eval`` scores: the checkpoint's run's own when ``--data`` is its kind (and ``--data-path``
    unset or its path), with ``--eval-samples`` / ``--eval-path`` when given; else ``--data``, ``--data-path``,
    ``--eval-path``, ``--eval-samples`` and ``--seed``."""
    from compt.commands.eval import DEFAULT_EVAL_SAMPLES, check_numbers
    from compt.config import DataConfig, validate_data
    from compt.vit.data import KINDS

    check_numbers(args)
    clip_only = [flag for flag, given in (("--set", args.data_set), ("--probe-samples", args.probe_samples),
                                          ("--tokenizer", args.tokenizer)) if given]
    if clip_only:
        raise UserError(f"{', '.join(clip_only)}: not an option of ViT evaluation (it takes --data {'|'.join(KINDS)} "
                        f"[--data-path P] [--eval-path P] [--eval-samples N] [--seed N])")
    if args.data == "folder" and not args.data_path and not args.eval_path:
        raise UserError("--data folder needs --data-path (root/<class>/*.png|jpg) or --eval-path")
    own = run_data(Path(args.checkpoint))
    given = {"eval_samples": args.eval_samples, "eval_path": args.eval_path}
    if own is not None and own.kind == args.data and args.data_path in ("", own.path):
        return dataclasses.replace(own, **{k: v for k, v in given.items() if v})
    data = DataConfig(kind=args.data, path=args.data_path, eval_path=args.eval_path, seed=args.seed,
                      eval_samples=args.eval_samples or DEFAULT_EVAL_SAMPLES)
    validate_data(data)
    return data


def load_vit(paradigm: Any, args: argparse.Namespace) -> tuple[Any, Any]:
    """(model, ViTConfig) of ``CHECKPOINT``; another paradigm's checkpoint or a contradicting ``--model`` is
    refused."""
    from compt.checkpoint import load_checkpoint
    from compt.paradigm import paradigm_named

    ckpt = load_checkpoint(args.checkpoint)
    if ckpt.paradigm != paradigm.name:
        what = paradigm_named(ckpt.paradigm).label if ckpt.paradigm else "plain open_clip checkpoint"
        raise UserError(f"{args.checkpoint} holds a {what}, not a {paradigm.label}")
    cfg = ckpt.model_config
    if args.model and args.model != cfg.name:
        raise UserError(f"{args.checkpoint} holds a {cfg.name} model, not {args.model} (drop --model)")
    return paradigm.create(cfg, ckpt.state_dict), cfg


def eval_checkpoint(paradigm: Any, args: argparse.Namespace) -> int:
    """Top-1 (%) of a ViT checkpoint on the held-out split of ``--data`` (`compt.vit.data.held_out_set`)."""
    from compt.commands.eval import check_target, write_json
    from compt.vit.data import held_out_set, top1

    data = eval_data(args)
    device = check_target(args)
    model, cfg = load_vit(paradigm, args)
    start = time.perf_counter()
    held = held_out_set(data, cfg)
    where = data.eval_path or data.path
    suite = f"{data.kind}{' ' + where if where else ''}: {len(held)} held-out images"
    metrics = {"top1": top1(model.to(device), held)}
    print(f"{cfg.name} on {suite}")
    print(f"top-1 accuracy  {metrics['top1']:6.2f} %")
    print(f"({time.perf_counter() - start:.1f} s)")
    if args.json:
        write_json(args, cfg.name, dataclasses.asdict(data), suite, metrics)
    return 0


def grow_command(paradigm: Any, args: argparse.Namespace, ckpt: Checkpoint) -> int:
    """A ViT child: compt checkpoint plus the folder timm loads, ``<out stem>-timm/`` (`export_timm`), and the
    growth checked on 4 random images (the largest logit difference to the parent)."""
    import torch

    from compt.checkpoint import save_checkpoint
    from compt.commands.grow import lineage
    from compt.vit.growth import grow_vit
    from compt.vit.models import export_timm

    if args.from_model:
        raise UserError("--from-model names the model of a plain open_clip checkpoint; a compt ViT checkpoint "
                        "carries its own config")
    parent_cfg, out = ckpt.model_config, Path(args.out)
    child_cfg = paradigm.grown_config(parent_cfg, args.child)
    state = grow_vit(ckpt.state_dict, parent_cfg, child_cfg, args.op, args.seed)
    save_checkpoint(out, state_dict=state, model_config=child_cfg, lineage=lineage(args, parent_cfg.name))
    folder = out.parent / f"{out.stem}-timm"
    export_timm(child_cfg, state, folder)
    x = torch.randn(4, parent_cfg.in_chans, parent_cfg.img_size, parent_cfg.img_size,
                    generator=torch.Generator().manual_seed(args.seed))
    with torch.no_grad():
        gap = (paradigm.create(child_cfg, state).eval()(x)
               - paradigm.create(parent_cfg, ckpt.state_dict).eval()(x)).abs().max().item()
    print(f"grew {parent_cfg.name} -> {child_cfg.name} with {args.op} (seed {args.seed}): {out}  [timm: {folder}]")
    print(f"check: largest |child − parent| logit on 4 random images = {gap:.2e}"
          + (" (function-preserving)" if gap < 1e-4 else ""))
    return 0
