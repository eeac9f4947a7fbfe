"""The fine-tuning recipe: AdamW with layer-wise lr decay, warmup + cosine, label smoothing, optional EMA.

A linear head (C classes) sits on the image tower's output embedding (B, D) — open_clip's ``model.visual``,
the projected image embedding, not normalised. ``mode = "full"`` trains tower and head; ``mode = "linear"``
freezes the tower: its embeddings are computed once (eval mode, no grad), standardised with the training
split's mean and std, and only the head trains (the tower's weights stay bit-identical).

Layer-wise lr decay (BEiT, Bao et al. 2022; the MAE and timm recipe). Every tower parameter gets a layer id
l: 0 for the patch embedding, class token, positional embedding and pre-norm; i for transformer block i
(1 ≤ i ≤ L); L + 1 for the final norm, the tower's projection and the head (a timm trunk, e.g. Swin: the
trunk's own ``group_matcher`` groups in order, stem 0, and the tower's projection with the head at L + 1).
At optimizer step t group l trains at

    lr_l(t) = lr(t) · decay^(L + 1 − l)

so the head follows the schedule lr(t), the last block gets lr(t)·decay and the embeddings lr(t)·decay^(L+1).
lr(t) is compt's per-step schedule (`compt.train.optim.lr_at`): lr·(t+1)/W for the first W warmup steps, then
min_lr + ½(lr − min_lr)(1 + cos(π(t − W)/(T − W))) down to min_lr at step T. Weight decay follows open_clip's
rule (`compt.train.optim.no_weight_decay`: gains, biases and norms are not decayed).

Loss: cross-entropy against label-smoothed targets (1 − ε)·onehot(y) + ε/C. EMA (decay β > 0): after every
step θ̄ ← β·θ̄ + (1 − β)·θ over the trained parameters; held-out accuracy is then measured with θ̄.

Data order: epoch e visits the training split in the permutation drawn from ``seed`` and e alone, so a fine-tune
resumed from its end-of-epoch state (`finetune_model`'s ``state``) gives the same numbers as an uninterrupted
one. No augmentation: the tiny members' inputs are 16–32 px and some labels (position) are not flip-invariant.
Held-out accuracy is measured after every epoch for the history; the reported top-1 is the last epoch's (no
selection on the held-out split).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from compt.clip.data.images import normalize
from compt.errors import UserError
from compt.finetune_config import FinetuneConfig
from compt.train.optim import lr_at, no_weight_decay

_BLOCK = re.compile(r"^transformer\.resblocks\.(\d+)\.")
_EMBEDDINGS = ("conv1.", "class_embedding", "positional_embedding", "ln_pre.")


def layer_ids(visual: nn.Module) -> tuple[dict[str, int], int]:
    """({parameter name: layer id}, L) of an image tower (module doc): open_clip's ViT by its own key names,
    a timm trunk (open_clip's ``TimmModel``) by the trunk's ``group_matcher``."""
    names = [n for n, _ in visual.named_parameters()]
    trunk = getattr(visual, "trunk", None)
    if trunk is not None and hasattr(trunk, "group_matcher"):
        from timm.models import group_parameters

        groups = group_parameters(trunk, trunk.group_matcher(coarse=False))   # {group: [names]}, stem first
        ids = {f"trunk.{n}": i for i, (_, members) in enumerate(sorted(groups.items())) for n in members}
        depth = len(groups) - 1          # groups 1 … L; the tower's own head (pooling projection) is L + 1
        return {n: ids.get(n, depth + 1) for n in names}, depth
    blocks = {n: int(m.group(1)) + 1 for n in names if (m := _BLOCK.match(n))}
    depth = max(blocks.values(), default=0)
    return {n: 0 if n.startswith(_EMBEDDINGS) else blocks.get(n, depth + 1) for n in names}, depth


def param_groups(visual: nn.Module | None, head: nn.Module, cfg: FinetuneConfig) -> list[dict[str, Any]]:
    """AdamW groups, one per (layer id, decayed or not), each with its ``lr_scale`` = decay^(L + 1 − l);
    `visual` None (linear mode): the head alone."""
    ids, depth = layer_ids(visual) if visual is not None else ({}, 0)
    named = [(n, p, ids[n]) for n, p in (visual.named_parameters() if visual is not None else ())]
    named += [(f"head.{n}", p, depth + 1) for n, p in head.named_parameters()]
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p, layer in named:
        if not p.requires_grad:
            continue
        decay = not no_weight_decay(name, p)
        g = groups.setdefault((layer, decay), {"params": [], "layer": layer, "weight_decay": cfg.weight_decay
                                               if decay else 0.0, "lr_scale": cfg.layer_decay ** (depth + 1 - layer)})
        g["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def smoothed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Mean over the batch of −Σ_c q_c log softmax(z)_c with q = (1 − ε)·onehot(y) + ε/C; logits (B, C)."""
    return F.cross_entropy(logits, labels, label_smoothing=smoothing)


@contextmanager
def swapped(params: list[nn.Parameter], values: list[torch.Tensor] | None) -> Iterator[None]:
    """The parameters hold `values` (the EMA) inside the block, their own values again after; None: unchanged."""
    if values is None:
        yield
        return
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, v in zip(params, values):
            p.copy_(v)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, v in zip(params, saved):
                p.copy_(v)


@torch.no_grad()
def embed(visual: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(N, D) float32 tower outputs of uint8 images (N, 3, H, W), in eval mode."""
    was = visual.training
    visual.eval()
    out = torch.cat([visual(normalize(images[i:i + batch_size])).float() for i in range(0, len(images), batch_size)])
    visual.train(was)
    return out


@torch.no_grad()
def top1(forward: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, labels: torch.Tensor,
         batch_size: int) -> float:
    """Top-1 accuracy (%) of `forward` on (inputs, labels)."""
    hits = sum(int((forward(inputs[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum())
               for i in range(0, len(inputs), batch_size))
    return 100.0 * hits / max(len(inputs), 1)


@dataclass
class Split:
    """One labelled split: uint8 images (N, 3, H, W), labels (N,) long, the class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classnames: tuple[str, ...]


Forward = Callable[[torch.Tensor], torch.Tensor]


def _setup(visual: nn.Module, head: nn.Linear, train: Split, held_out: Split,
           cfg: FinetuneConfig) -> tuple[Forward, torch.Tensor, torch.Tensor, nn.Module | None]:
    """(forward, training inputs, held-out inputs, the trained tower or None) of the mode: full feeds uint8 images
    through tower and head; linear feeds the frozen tower's standardised embeddings, computed once, to the head."""
    if cfg.mode == "full":
        return (lambda x: head(visual(normalize(x)))), train.images, held_out.images, visual
    visual.requires_grad_(False)
    feats, held = embed(visual, train.images, cfg.batch_size), embed(visual, held_out.images, cfg.batch_size)
    mean, std = feats.mean(0), feats.std(0).clamp_min(1e-6)           # (D,)
    return (lambda x: head((x - mean) / std)), feats, held, None


def _ema_update(ema: list[torch.Tensor] | None, params: list[nn.Parameter], decay: float) -> None:
    if ema is not None:
        with torch.no_grad():
            for e, p in zip(ema, params):
                e.lerp_(p.detach(), 1.0 - decay)


def finetune_model(visual: nn.Module, embed_dim: int, train: Split, held_out: Split, cfg: FinetuneConfig, *,
                   state: dict[str, Any] | None = None, save: Callable[[dict[str, Any]], None] | None = None,
                   progress: bool = False, desc: str = "") -> dict[str, Any]:
    """Fine-tune `visual` (output (B, `embed_dim`); in place, linear mode leaves it untouched) with a new linear
    head on `train`; returns ``{"top1", "history", "steps", "head"}`` (held-out top-1 in %, per-epoch mean
    training loss and held-out top-1).

    `state` (what `save` was last given: the end-of-epoch weights, optimizer, EMA and history) resumes a
    killed fine-tune at its next epoch; `save` is called after every epoch but the last."""
    head = nn.Linear(embed_dim, len(train.classnames))
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    forward, inputs, held_inputs, tower = _setup(visual, head, train, held_out, cfg)
    groups = param_groups(tower, head, cfg)
    params = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
    ema = [p.detach().clone() for p in params] if cfg.ema else None
    history: list[dict[str, float]] = []
    if state is not None:
        if tower is not None:
            visual.load_state_dict(state["visual"])
        head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        ema, history = state["ema"], list(state["history"])
    per_epoch = math.ceil(len(inputs) / cfg.batch_size)
    total, warmup = cfg.epochs * per_epoch, round(cfg.warmup_epochs * per_epoch)
    bar = tqdm(total=total, initial=len(history) * per_epoch, desc=desc, disable=not progress, dynamic_ncols=True,
               unit="step")
    for epoch in range(len(history), cfg.epochs):
        order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
        visual.train(tower is not None)
        losses = []
        for b in range(per_epoch):
            idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            lr = lr_at(epoch * per_epoch + b, base_lr=cfg.lr, min_lr=cfg.min_lr, warmup=warmup, total=total)
            for g in optimizer.param_groups:
                g["lr"] = lr * g["lr_scale"]
            loss = smoothed_cross_entropy(forward(inputs[idx]), train.labels[idx], cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            _ema_update(ema, params, cfg.ema)
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                raise UserError(f"fine-tuning {desc or 'the model'}: the loss became {losses[-1]} at step "
                                f"{epoch * per_epoch + b + 1} (lr {lr:.3g}); no result was written — lower the lr")
            bar.update(1)
        visual.eval()
        with swapped(params, ema):
            acc = top1(forward, held_inputs, held_out.labels, cfg.batch_size)
        history.append({"epoch": epoch + 1, "loss": sum(losses) / len(losses), "top1": acc})
        bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", top1=f"{acc:.1f}")
        if save is not None and epoch + 1 < cfg.epochs:
            save({"visual": visual.state_dict() if tower is not None else None, "head": head.state_dict(),
                  "optimizer": optimizer.state_dict(), "ema": ema, "history": history})
    bar.close()
    return {"top1": history[-1]["top1"], "history": history, "steps": total, "head": head}
