"""Pruning an open_clip ViT CLIP down (``growth = "prune"``): importance on a calibration batch, then slicing.

Per tower (ViT image tower, text transformer), measured by forward hooks on the parent in eval mode without
gradients, on images and each sample's first caption (m(·): the mean over the batch and tokens, `compt.prune`):

- attention head h of block l:  A_{l,h} = m(‖o_{l,h}‖₂), o_{l,h} = softmax(q_h k_hᵀ/√d_h + mask) v_h ∈ R^{d_h},
  the head's output before ``out_proj``, recomputed from the block's ``ln_1`` output, its fused ``in_proj`` and
  its attention mask (causal in the text tower);
- MLP unit u of block l:  M_{l,u} = m(|GELU(c_fc(x))_u|), the input of ``c_proj``;
- stream channel j:  C_j = Σ_n m(|LN_n(x)_j|) over every LayerNorm n of the tower (``ln_1``, ``ln_2`` of each
  block, ``ln_pre`` and ``ln_post`` of the image tower, ``ln_final`` of the text tower);
- block l:  BI_l = 1 − m(cos(x_l, y_l));
- shared embedding dim k:  E_k = m(|f_img,k|) + m(|f_txt,k|), the towers' projected, unnormalised features.

Selection (`compt.prune.keep`, original order kept): the L' blocks of largest BI, the w' channels of largest C
(patch embedding rows, class and positional embeddings, token embedding columns, every LayerNorm, every read's
columns and write's rows), per kept block the w'/d_h heads of largest A (their q, k and v rows of the fused
``in_proj`` and their ``out_proj`` columns) and the units of largest M, and the e' embedding dims of largest E
(projection columns). open_clip ties a block's head count to its width (heads · d_h = w), so heads and channels
shrink together but are chosen independently. The child must keep the image and patch size, context, vocabulary,
head dims and logit bias and be no larger anywhere; Swin image towers are not pruned. Pruning only selects, so
growing a pruned model back with ``preserve`` at the same width reproduces every kept block and unit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from compt.clip.growth.common import assert_child, check_state
from compt.clip.models import ModelConfig, create_model
from compt.errors import UserError
from compt.growth import StateDict
from compt.prune import Means, block_input, chunks, keep, remove

Tensor = torch.Tensor
TOWERS = ("vision", "text")
PREFIX = {"vision": "visual.", "text": ""}


def _towers(cfg: ModelConfig) -> dict[str, dict[str, int]]:
    v, t = cfg.vision, cfg.text
    return {"vision": {"width": v.width, "layers": v.layers, "mlp": int(v.width * v.mlp_ratio), "hd": v.head_width},
            "text": {"width": t.width, "layers": t.layers, "mlp": int(t.width * t.mlp_ratio), "hd": t.head_width}}


def validate_clip_prune(parent: ModelConfig, child: ModelConfig) -> None:
    """Refuse a pruning that is not child ⊆ parent with the same token grid and head dims (one-line `UserError`)."""
    for cfg in (parent, child):
        if cfg.is_swin:
            raise UserError(f"prune: {cfg.name} has a Swin image tower; compt prunes ViT towers only")
        if cfg.text.width % cfg.text.heads:
            raise UserError(f"prune: {cfg.name}'s text width {cfg.text.width} does not divide into its "
                            f"{cfg.text.heads} heads")
    same = {"image size": (parent.vision.image_size, child.vision.image_size, "the token grid is kept"),
            "patch size": (parent.vision.patch_size, child.vision.patch_size, "the patch embedding is sliced"),
            "context length": (parent.text.context_length, child.text.context_length, "the positions are kept"),
            "vocabulary size": (parent.text.vocab_size, child.text.vocab_size, "the tokenizer is kept"),
            "vision head dim": (parent.vision.head_width, child.vision.head_width, "heads are kept whole"),
            "text head dim": (parent.text.head_width, child.text.head_width, "heads are kept whole"),
            "learnable logit bias": (parent.init_logit_bias is None, child.init_logit_bias is None,
                                     "both must be trained with the same objective")}
    for what, (a, b, why) in same.items():
        if a != b:
            raise UserError(f"prune: {what} differs between {parent.name} and {child.name} ({why})")
    pt, ct = _towers(parent), _towers(child)
    shapes = [(f"{tower} {what}", pt[tower][what], ct[tower][what]) for tower in TOWERS
              for what in ("width", "layers", "mlp")] + [("embedding size", parent.embed_dim, child.embed_dim)]
    for what, a, b in shapes:
        if b > a:
            raise UserError(f"prune: {what} {a} -> {b} grows; the pruned model must be no larger than "
                            f"{parent.name} (use a growth operator to grow)")


def _head_outputs(block: torch.nn.Module, x: Tensor, mask: Tensor | None, hd: int) -> Tensor:
    """(N, H, T, d_h): each head's attention output of a block on stream input `x` (N, T, w)."""
    h = block.ln_1(x)
    q, k, v = F.linear(h, block.attn.in_proj_weight, block.attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (z.unflatten(-1, (z.shape[-1] // hd, hd)).transpose(1, 2) for z in (q, k, v))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else mask.to(h.dtype))


def _hook_tower(tower: str, trunk: torch.nn.Module, norms: list[torch.nn.Module], hd: int, stats: Means
                ) -> list[Any]:
    """Forward hooks recording `tower`'s statistics into `stats` (module docstring)."""
    assert trunk.batch_first, "open_clip transformers are batch-first"
    handles, inputs = [], {}
    for i, block in enumerate(trunk.resblocks):
        def pre(_m: Any, args: tuple, kwargs: dict, i: int = i, block: torch.nn.Module = block) -> None:
            inputs[i] = x = block_input(args, kwargs, "q_x")
            o = _head_outputs(block, x, kwargs.get("attn_mask"), hd)
            stats.add(f"{tower}.heads.{i}", o.norm(dim=-1).sum((0, 2)), o.shape[0] * o.shape[2])

        handles += [block.register_forward_pre_hook(pre, with_kwargs=True),
                    block.register_forward_hook(lambda _m, _a, y, i=i: stats.add_block(f"{tower}.blocks.{i}",
                                                                                       inputs.pop(i), y)),
                    block.mlp.c_proj.register_forward_pre_hook(
                        lambda _m, args, i=i: stats.add_abs(f"{tower}.mlp.{i}", args[0]))]
        norms = [*norms, block.ln_1, block.ln_2]
    for n, norm in enumerate(norms):
        handles.append(norm.register_forward_hook(lambda _m, _a, y, n=n: stats.add_abs(f"{tower}.norm.{n}", y)))
    return handles


def measure_clip(model: torch.nn.Module, cfg: ModelConfig, batch: Sequence[Tensor]) -> dict[str, Tensor]:
    """Importance of `model` (config `cfg`, eval mode) on a training batch (images uint8 (B, 3, H, W), tokens
    (B, K, ctx), …): per tower ``<tower>.heads`` (L, H), ``<tower>.mlp`` (L, U), ``<tower>.channels`` (w,),
    ``<tower>.blocks`` (L,), and ``embed`` (e,) (module docstring)."""
    from compt.clip.data.images import to_model_input

    stats, v = Means(), model.visual
    handles = [*_hook_tower("vision", v.transformer, [v.ln_pre, v.ln_post], cfg.vision.head_width, stats),
               *_hook_tower("text", model.transformer, [model.ln_final], cfg.text.head_width, stats)]
    try:
        with torch.no_grad():
            for images, tokens, *_ in chunks(batch):
                stats.add_abs("embed.image", model.encode_image(to_model_input(images)))
                stats.add_abs("embed.text", model.encode_text(tokens[:, 0]))
    finally:
        remove(handles)
    out = {"embed": stats.mean("embed.image") + stats.mean("embed.text")}
    for tower, shape in _towers(cfg).items():
        layers = range(shape["layers"])
        for what in ("heads", "mlp", "blocks"):
            out[f"{tower}.{what}"] = torch.stack([stats.mean(f"{tower}.{what}.{i}") for i in layers])
        out[f"{tower}.channels"] = sum(stats.mean(k) for k in stats.total if k.startswith(f"{tower}.norm."))
    return out


def select_clip(importance: dict[str, Tensor], parent: ModelConfig, child: ModelConfig) -> dict[str, Any]:
    """What the child keeps: {"embed": [k…], tower: {"layers", "channels", "heads" (per kept block), "units" (per
    kept block)}} (module docstring)."""
    kept: dict[str, Any] = {"embed": keep(importance["embed"], child.embed_dim).tolist()}
    for tower, shape in _towers(child).items():
        layers = keep(importance[f"{tower}.blocks"], shape["layers"]).tolist()
        kept[tower] = {"layers": layers, "channels": keep(importance[f"{tower}.channels"], shape["width"]).tolist(),
                       "heads": [keep(importance[f"{tower}.heads"][i], shape["width"] // shape["hd"]).tolist()
                                 for i in layers],
                       "units": [keep(importance[f"{tower}.mlp"][i], shape["mlp"]).tolist() for i in layers]}
    return kept


def _idx(values: Sequence[int]) -> Tensor:
    return torch.tensor(list(values), dtype=torch.long)


def _head_rows(heads: Sequence[int], hd: int) -> Tensor:
    return _idx([h * hd + r for h in heads for r in range(hd)])


def _tower(p: StateDict, out: StateDict, tower: str, kept: dict[str, Any], width: int, hd: int) -> None:
    """One tower's blocks: kept block l → child block j, sliced by its heads, units and the tower's channels."""
    c, pre = _idx(kept["channels"]), f"{PREFIX[tower]}transformer.resblocks."
    for j, layer in enumerate(kept["layers"]):
        src, dst = f"{pre}{layer}.", f"{pre}{j}."
        h, u = _head_rows(kept["heads"][j], hd), _idx(kept["units"][j])
        qkv = torch.cat([h + block * width for block in range(3)])
        for name in ("ln_1.weight", "ln_1.bias", "ln_2.weight", "ln_2.bias", "attn.out_proj.bias", "mlp.c_proj.bias"):
            out[dst + name] = p[src + name][c]
        out[dst + "attn.in_proj_weight"] = p[src + "attn.in_proj_weight"][qkv][:, c]
        out[dst + "attn.in_proj_bias"] = p[src + "attn.in_proj_bias"][qkv]
        out[dst + "attn.out_proj.weight"] = p[src + "attn.out_proj.weight"][c][:, h]
        out[dst + "mlp.c_fc.weight"] = p[src + "mlp.c_fc.weight"][u][:, c]
        out[dst + "mlp.c_fc.bias"] = p[src + "mlp.c_fc.bias"][u]
        out[dst + "mlp.c_proj.weight"] = p[src + "mlp.c_proj.weight"][c][:, u]


def prune_clip(parent_state: StateDict, parent_cfg: ModelConfig, child_cfg: ModelConfig, kept: dict[str, Any]
               ) -> StateDict:
    """The child's state dict: the parent's tensors at the `kept` indices (`select_clip`), shapes asserted."""
    check_state(parent_state, parent_cfg)
    p, e = parent_state, _idx(kept["embed"])
    cv, ct = _idx(kept["vision"]["channels"]), _idx(kept["text"]["channels"])
    out: StateDict = {k: p[k] for k in ("logit_scale", "logit_bias") if k in p}
    out.update({"visual.conv1.weight": p["visual.conv1.weight"][cv], "visual.class_embedding": p[
        "visual.class_embedding"][cv], "visual.positional_embedding": p["visual.positional_embedding"][:, cv],
                "visual.proj": p["visual.proj"][cv][:, e], "token_embedding.weight": p["token_embedding.weight"][:, ct],
                "positional_embedding": p["positional_embedding"][:, ct],
                "text_projection": p["text_projection"][ct][:, e]})
    for key in ("visual.ln_pre", "visual.ln_post"):
        out.update({f"{key}.weight": p[f"{key}.weight"][cv], f"{key}.bias": p[f"{key}.bias"][cv]})
    out.update({"ln_final.weight": p["ln_final.weight"][ct], "ln_final.bias": p["ln_final.bias"][ct]})
    for tower, shape in _towers(parent_cfg).items():
        _tower(p, out, tower, kept[tower], shape["width"], shape["hd"])
    return assert_child({k: v.clone() for k, v in out.items()}, child_cfg)


def prune_clip_model(parent_state: StateDict, parent_cfg: ModelConfig, child_cfg: ModelConfig,
                     batch: Sequence[Tensor], device: torch.device | str = "cpu") -> tuple[StateDict, dict[str, Any]]:
    """Validate, measure on `batch`, select and slice: (child state, {"importance", "kept"})."""
    validate_clip_prune(parent_cfg, child_cfg)
    check_state(parent_state, parent_cfg)
    model = create_model(parent_cfg, state_dict=parent_state).to(device).eval()
    importance = measure_clip(model, parent_cfg, [t.to(device) for t in batch])
    kept = select_clip(importance, parent_cfg, child_cfg)
    return prune_clip(parent_state, parent_cfg, child_cfg, kept), {"importance": importance, "kept": kept}
