"""`compt finetune` for ViT classifiers: a pre-trained member with a new head on a labelled set.

Data (``--data``): ``synthetic`` (the paradigm's coloured shapes, the member's classes), ``fashion-mnist[:ROOT]``
(10 classes) or ``folder:PATH`` (``PATH/<class>/*``, its classes); training images are a ``train_samples`` draw
and held-out ones an ``eval_samples`` split, as a run of that kind draws them (`compt.vit.data`) with the
fine-tuning seed.

Recipe. The classifier gets a new zero-initialised head of the data's C classes (timm's ``reset_classifier``).
``full`` trains everything; ``linear`` freezes the trunk: its pre-logit features (B, d) are computed once (eval
mode) and only the head trains, so the trunk stays bit-identical. AdamW, per-step lr
lr(t) = `compt.train.optim.lr_at` (linear warmup over ``warmup_epochs``, cosine to ``min_lr``); layer-wise decay:
timm's parameter group l (its ``group_matcher``: stem 0, block i of L, the final norm with block L) trains at
lr(t) · decay^(L + 1 − l), the head at lr(t); no weight decay on gains, biases and norms
(`compt.train.optim.no_weight_decay`). Loss: cross-entropy against (1 − ε)·onehot(y) + ε/C. EMA (β > 0):
θ̄ ← β θ̄ + (1 − β) θ after every step, held-out top-1 measured with θ̄. Epoch e visits the training images in the
permutation of (seed, e) alone, so a fine-tune resumed from its end-of-epoch state (``<result>.state.pt``) gives
the numbers of an uninterrupted one. The reported top-1 is the last epoch's.

Results: ``RUN/finetune/<member>/<dataset>[-linear].json`` per finished member of a run (``<folder of the
checkpoint>/finetune/`` for one checkpoint); a member with a result for the same settings and checkpoint is
skipped, one for other settings is refused unless ``redo``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compt.checkpoint import atomic_save, atomic_write_json, sha256_file
from compt.errors import UserError, unknown_name
from compt.finetune_config import FinetuneConfig
from compt.vit.models import ViTConfig

FINETUNE_DIR = "finetune"
KINDS = ("synthetic", "fashion-mnist", "folder")


def labelled_sets(spec: str, model_cfg: ViTConfig, cfg: FinetuneConfig) -> tuple[str, Any, Any, int]:
    """(result name, training set, held-out set, classes C) of ``--data KIND[:ARG]`` (module docstring)."""
    from compt.config import DataConfig
    from compt.vit.data import ViTData, scan_folder

    kind, _, arg = spec.partition(":")
    if kind not in KINDS:
        raise unknown_name("fine-tuning data kind", kind, KINDS)
    if kind == "synthetic" and arg:
        raise UserError(f"--data synthetic takes no argument (its classes are the member's), got {arg!r}")
    if kind == "folder" and not arg:
        raise UserError("--data folder needs its path: folder:PATH (PATH/<class>/*.png|jpg)")
    classes = {"synthetic": model_cfg.num_classes, "fashion-mnist": 10}.get(kind) or len(scan_folder(Path(arg))[0])
    shape = dataclasses.replace(model_cfg, num_classes=classes)
    data = DataConfig(kind=kind, path=arg, num_samples=cfg.train_samples, eval_samples=cfg.eval_samples,
                      seed=cfg.seed)
    train, held, _ = ViTData(data, carve_validation=False).splits(shape)
    name = f"folder-{Path(arg).resolve().name}" if kind == "folder" else kind
    return name, train, held, classes


def stacked(data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, C, H, W), labels (N,)) of a labelled set."""
    items = [data[i] for i in range(len(data))]
    return torch.stack([x for x, _, _ in items]), torch.as_tensor([int(y) for _, y, _ in items])


def param_groups(model: nn.Module, cfg: FinetuneConfig) -> list[dict[str, Any]]:
    """AdamW groups per (layer id, decayed or not), ``lr_scale`` = decay^(L + 1 − l) (module docstring); linear
    mode: the head alone."""
    from timm.models import group_parameters

    from compt.train.optim import no_weight_decay

    groups = sorted(group_parameters(model, model.group_matcher(coarse=False)).items())   # stem, blocks, head
    layer = {n: i for i, (_, names) in enumerate(groups) for n in names if not n.startswith("head.")}
    depth = max(layer.values())
    out: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            lid = depth + 1 if name.startswith("head.") else layer.get(name, depth + 1)
            decay = not no_weight_decay(name, p)
            g = out.setdefault((lid, decay), {"params": [], "weight_decay": cfg.weight_decay if decay else 0.0,
                                              "lr_scale": cfg.layer_decay ** (depth + 1 - lid)})
            g["params"].append(p)
    return [out[k] for k in sorted(out)]


def finetune_classifier(model: nn.Module, train: Any, held: Any, classes: int, cfg: FinetuneConfig, *,
                        state: dict[str, Any] | None = None, save: Any = None) -> dict[str, Any]:
    """Fine-tune timm ViT `model` in place with a new head of `classes` (module docstring); ``{"top1",
    "history", "steps"}``. `state` (what `save` was last given, after every epoch but the last) resumes."""
    from compt.train.optim import lr_at
    from compt.vit.task import forward_vit

    model.reset_classifier(classes)
    head = model.get_classifier()
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    (x, y), (hx, hy) = stacked(train), stacked(held)
    if cfg.mode == "linear":
        model.requires_grad_(False).eval()
        head.requires_grad_(True)
        with torch.no_grad():   # the frozen trunk's pre-logit features (N, d), once
            x, hx = forward_vit(model, x)[1], forward_vit(model, hx)[1]
    forward = head if cfg.mode == "linear" else model
    groups = param_groups(model, cfg)
    params = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
    ema = [p.detach().clone() for p in params] if cfg.ema else None
    history: list[dict[str, float]] = []
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        ema, history = state["ema"], list(state["history"])
    per_epoch = math.ceil(len(x) / cfg.batch_size)
    total, warmup = cfg.epochs * per_epoch, round(cfg.warmup_epochs * per_epoch)
    for epoch in range(len(history), cfg.epochs):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
        model.train(cfg.mode == "full")
        losses = []
        for b in range(per_epoch):
            lr = lr_at(epoch * per_epoch + b, base_lr=cfg.lr, min_lr=cfg.min_lr, warmup=warmup, total=total)
            for g in optimizer.param_groups:
                g["lr"] = lr * g["lr_scale"]
            idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            loss = F.cross_entropy(forward(x[idx]), y[idx], label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if ema is not None:
                with torch.no_grad():
                    for e, p in zip(ema, params):
                        e.lerp_(p.detach(), 1.0 - cfg.ema)
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                raise UserError(f"fine-tuning: the loss became {losses[-1]} at step {epoch * per_epoch + b + 1} "
                                f"(lr {lr:.3g}); no result was written — lower the lr")
        history.append({"epoch": epoch + 1, "loss": sum(losses) / len(losses),
                        "top1": held_out_top1(forward, params, ema, hx, hy, cfg.batch_size)})
        if save is not None and epoch + 1 < cfg.epochs:
            save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "ema": ema, "history": history})
    return {"top1": history[-1]["top1"], "history": history, "steps": total}


@torch.no_grad()
def held_out_top1(forward: nn.Module, params: list[nn.Parameter], ema: list[torch.Tensor] | None,
                  x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """Top-1 (%) of `forward` (eval mode) on (x, y), with the EMA weights swapped in when there are any."""
    saved = [p.detach().clone() for p in params]
    for p, e in zip(params, ema or ()):
        p.copy_(e)
    was = forward.training
    forward.eval()
    hits = sum(int((forward(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
               for i in range(0, len(x), batch_size))
    forward.train(was)
    for p, s in zip(params, saved):
        p.copy_(s)
    return 100.0 * hits / len(x)


def targets_of(path: Path) -> list[tuple[str, Path, Path]]:
    """(member key, checkpoint, results folder) of every finished member of a ViT run, or of checkpoint `path`."""
    from compt.config import read_run_config
    from compt.export import run_members

    if path.is_file():
        return [("", path, path.parent / FINETUNE_DIR)]
    if not (path / "config.toml").is_file():
        raise UserError(f"{path} is not a run directory (no config.toml) nor a checkpoint file")
    if read_run_config(path).paradigm.name != "vit":
        raise UserError(f"{path} is not a ViT run")
    return [(m.key, path / m.key / "final.pt", path / FINETUNE_DIR / m.key) for m in run_members(path)]


def finetune_run(target: str | Path, *, data: str = "synthetic", mode: str = "full", redo: bool = False,
                 progress: bool = True, **settings: Any) -> list[dict[str, Any]]:
    """Fine-tune every finished member of ViT run `target` (or the one checkpoint) on `data`; each result."""
    from compt.runlock import run_lock
    from compt.signals import interrupt_on_signals

    fields = {f.name for f in dataclasses.fields(FinetuneConfig)} - {"mode"}
    if unknown := sorted(set(settings) - fields):
        raise UserError(f"unknown fine-tuning setting {unknown[0]!r} (known: {', '.join(sorted(fields))})")
    cfg = FinetuneConfig(mode=mode, **settings)
    path = Path(target)
    targets = targets_of(path)
    folder = path / FINETUNE_DIR if path.is_dir() else path.parent / FINETUNE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    with interrupt_on_signals("finished members and epochs are kept — run the same command again to resume"), \
            run_lock(folder, ("fine-tuning folder", "wait for that fine-tune to end")):
        return [finetune_member(key, ckpt, out, data, cfg, redo) for key, ckpt, out in targets]


def finetune_member(key: str, checkpoint: Path, folder: Path, data: str, cfg: FinetuneConfig,
                    redo: bool) -> dict[str, Any]:
    """One member: its stored result when it has one for these settings, else the fine-tune (resumed from its
    end-of-epoch state when there is one for these settings and this checkpoint)."""
    from compt.checkpoint import load_checkpoint
    from compt.paradigm import paradigm_named

    ckpt = load_checkpoint(checkpoint)
    if ckpt.paradigm != "vit":
        raise UserError(f"{checkpoint} is not a compt ViT checkpoint")
    name, train, held, classes = labelled_sets(data, ckpt.model_config, cfg)
    out = folder / f"{name}{'-linear' if cfg.mode == 'linear' else ''}.json"
    source, settings = sha256_file(checkpoint), dataclasses.asdict(cfg)
    if out.is_file() and not redo:
        done = json.loads(out.read_text())
        if done["settings"] != settings or done["checkpoint_sha256"] != source:
            raise UserError(f"{out} was made with other settings or another checkpoint: pass --redo to replace it")
        print(f"compt finetune: {key or checkpoint}: {out.name} already done (top-1 {done['top1']:.1f} %), skipped")
        return done
    state_path = out.with_suffix(".state.pt")
    state = torch.load(state_path, weights_only=True) if state_path.is_file() else None
    if state is not None and (state["settings"], state["source"]) != (settings, source):
        state = None   # another fine-tune's: start over
    start = time.perf_counter()
    model = paradigm_named("vit").create(ckpt.model_config, ckpt.state_dict)
    res = finetune_classifier(model, train, held, classes, cfg, state=state, save=lambda s: atomic_save(
        {**s, "settings": settings, "source": source}, state_path))
    result = {"member": key, "checkpoint": str(checkpoint), "model": ckpt.model_config.name, "data": data,
              "dataset": name, "mode": cfg.mode, "top1": res["top1"], "steps": res["steps"],
              "train_size": len(train), "held_out_size": len(held), "settings": settings,
              "checkpoint_sha256": source, "history": res["history"], "wall_s": time.perf_counter() - start,
              "resumed_from_epoch": len(state["history"]) if state else 0}
    atomic_write_json(out, result)
    state_path.unlink(missing_ok=True)
    print(f"compt finetune: {key or checkpoint}: held-out top-1 {res['top1']:.1f} % → {out}")
    return result
