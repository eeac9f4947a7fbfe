"""Growth of timm ViT classifiers: ``preserve`` (exact), a pure ``(parent_state, parent_cfg, child_cfg, *,
generator) -> child_state`` that asserts every key and shape against the child's own state dict.

State dicts are timm `VisionTransformer`'s: ``cls_token`` (1, 1, d), ``pos_embed`` (1, T, d),
``patch_embed.proj`` (d, C, p, p), ``blocks.i.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``norm``,
``head`` (K, d). Every read of the residual stream goes through a LayerNorm LN(x) = γ ⊙ (x − μ)/σ + β.

**preserve.** Parent width d, child d' ≥ d, r = d'/d, m = d' − d. The child's stream is kept equal to E s with
the LN-compatible map (`compt.clip` uses the same E for its towers)

    E s = [ μ + √r (s − μ) ;  μ 1_m ],     μ = mean(s),

which keeps every token's mean and variance (mean: (d μ + m μ)/d' = μ; variance: r‖s − μ‖²/d' = ‖s − μ‖²/d), so
each child LayerNorm normalises E s to [√r n ; 0] with the parent's n — the same σ, ε included. E is linear, so

- writes into the stream (patch embedding, class token, position embedding, attn.proj, mlp.fc2, their biases)
  become E W, E b on the parent's rows; the columns of new heads and new MLP units are zero;
- LayerNorms get γ' = [γ ; fresh], β' = [√r β ; 0]: the child's output is [√r · LN(s) ; 0];
- reads (qkv, fc1, head) get W' = [W / √r , W_new]: the parent part reads √r LN(s) exactly; the new columns
  (fresh) read channels that are zero, so they change nothing at step 0 but give every new channel its own
  gradient;
- heads (equal head dim): parent head j is child head j in each of the q, k, v blocks; new heads are fresh
  behind zero attn.proj columns; MLP: parent units first, new units fresh behind zero fc2 columns;
- depth: parent block i → child block ⌊i L'/L⌋ (`compt.growth.identity_depth`); an inserted block is an exact
  identity (attn.proj and mlp.fc2 weights and biases zero, the rest fresh).

Then the child's logits equal the parent's for every image (same image and patch size, same classes).
"""

from __future__ import annotations

import math

import torch

from compt.errors import UserError, unknown_name
from compt.growth import StateDict, assert_shapes, check_shapes, fresh_child, identity_depth, meta_shapes, put
from compt.vit.models import ViTConfig, build_vit

Tensor = torch.Tensor
VIT_GROWTH_OPS = ("preserve",)


def validate_vit_growth(parent: ViTConfig, child: ViTConfig, op: str = "preserve") -> None:
    """One-line `UserError` unless `child` can grow from `parent`: same input and classes, no smaller width,
    depth or MLP, the same head dimension."""
    if op not in VIT_GROWTH_OPS:
        raise unknown_name("ViT growth operator", op, (*VIT_GROWTH_OPS, "none"))
    same = ("img_size", "patch_size", "in_chans", "num_classes", "mlp_ratio")
    for f in same:
        if getattr(parent, f) != getattr(child, f):
            raise UserError(f"{child.name} cannot grow from {parent.name}: {f} differs ({getattr(parent, f)} → "
                            f"{getattr(child, f)})")
    if child.width < parent.width or child.depth < parent.depth or child.heads < parent.heads:
        raise UserError(f"{child.name} cannot grow from {parent.name}: it is smaller in width, depth or heads")
    if child.head_dim != parent.head_dim:
        raise UserError(f"{child.name} cannot grow from {parent.name}: head dim {child.head_dim} ≠ "
                        f"{parent.head_dim} (preserve keeps each head)")


def stream_map(d: int, d_child: int) -> Tensor:
    """E (d', d): E s = [μ + √r (s − μ) ; μ 1_m] (module docstring)."""
    r = d_child / d
    mean = torch.full((d, d), 1.0 / d, dtype=torch.float64)
    top = mean + math.sqrt(r) * (torch.eye(d, dtype=torch.float64) - mean)
    return torch.cat([top, torch.full((d_child - d, d), 1.0 / d, dtype=torch.float64)]).float()


def _write(state: StateDict, key: str, parent: Tensor, e: Tensor, cols: int | None = None) -> None:
    """child[key] ← E · parent along dim 0 (on the first `cols` columns; the rest zero)."""
    value = (e @ parent.reshape(parent.shape[0], -1)).reshape(e.shape[0], *parent.shape[1:])
    if cols is None:
        put(state, key, value)
        return
    put(state, key, torch.zeros_like(state[key]))
    put(state, key, value, (slice(None), slice(0, cols)))


def _read(state: StateDict, key: str, parent: Tensor, r: float, rows: Tensor | slice) -> None:
    """child[key][rows, :d] ← W / √r (the new columns keep their fresh values)."""
    put(state, key, parent / math.sqrt(r), (rows, slice(0, parent.shape[1])))


def _norm(state: StateDict, key: str, parent: StateDict, pkey: str, r: float) -> None:
    """γ' = [γ ; fresh], β' = [√r β ; 0] (a new channel's gain multiplies its zero normalised value)."""
    d = parent[pkey + ".weight"].shape[0]
    put(state, key + ".weight", parent[pkey + ".weight"], (slice(0, d),))
    put(state, key + ".bias", torch.zeros_like(state[key + ".bias"]))
    put(state, key + ".bias", math.sqrt(r) * parent[pkey + ".bias"], (slice(0, d),))


def _block(state: StateDict, parent: StateDict, pc: ViTConfig, cc: ViTConfig, i: int, j: int, e: Tensor) -> None:
    """Parent block i into child block j (heads and units first, module docstring)."""
    p, c, r, d, dc = f"blocks.{i}.", f"blocks.{j}.", cc.width / pc.width, pc.width, cc.width
    _norm(state, c + "norm1", parent, p + "norm1", r)
    _norm(state, c + "norm2", parent, p + "norm2", r)
    rows = torch.cat([torch.arange(d) + b * dc for b in range(3)])   # parent heads in each of q, k, v
    _read(state, c + "attn.qkv.weight", parent[p + "attn.qkv.weight"], r, rows)
    put(state, c + "attn.qkv.bias", parent[p + "attn.qkv.bias"], rows)
    _write(state, c + "attn.proj.weight", parent[p + "attn.proj.weight"], e, cols=d)
    _write(state, c + "attn.proj.bias", parent[p + "attn.proj.bias"], e)
    h = pc.hidden
    _read(state, c + "mlp.fc1.weight", parent[p + "mlp.fc1.weight"], r, slice(0, h))
    put(state, c + "mlp.fc1.bias", parent[p + "mlp.fc1.bias"], (slice(0, h),))
    _write(state, c + "mlp.fc2.weight", parent[p + "mlp.fc2.weight"], e, cols=h)
    _write(state, c + "mlp.fc2.bias", parent[p + "mlp.fc2.bias"], e)


def preserve(parent_state: StateDict, parent_cfg: ViTConfig, child_cfg: ViTConfig, *,
             generator: torch.Generator) -> StateDict:
    """The child of `child_cfg` computing the parent's logits (module docstring)."""
    validate_vit_growth(parent_cfg, child_cfg)
    check_shapes(parent_state, meta_shapes(build_vit, parent_cfg), parent_cfg.name, "parent")
    state = fresh_child(child_cfg, generator, build_vit)
    want = {k: tuple(v.shape) for k, v in state.items()}
    e, r = stream_map(parent_cfg.width, child_cfg.width), child_cfg.width / parent_cfg.width
    parent = {k: v.float() for k, v in parent_state.items()}
    for key in ("cls_token", "pos_embed"):   # (1, ·, d): E along the last dim
        put(state, key, parent[key] @ e.T)
    _write(state, "patch_embed.proj.weight", parent["patch_embed.proj.weight"], e)
    _write(state, "patch_embed.proj.bias", parent["patch_embed.proj.bias"], e)
    for j, i in enumerate(identity_depth(parent_cfg.depth, child_cfg.depth)):
        if i is None:   # an inserted identity block: nothing written into the stream
            for k in ("attn.proj.weight", "attn.proj.bias", "mlp.fc2.weight", "mlp.fc2.bias"):
                put(state, f"blocks.{j}.{k}", torch.zeros_like(state[f"blocks.{j}.{k}"]))
        else:
            _block(state, parent, parent_cfg, child_cfg, i, j, e)
    _norm(state, "norm", parent, "norm", r)
    _read(state, "head.weight", parent["head.weight"], r, slice(None))
    put(state, "head.bias", parent["head.bias"])
    return assert_shapes(state, want)


def grow_vit(parent_state: StateDict, parent_cfg: ViTConfig, child_cfg: ViTConfig, op: str, seed: int) -> StateDict:
    """The one entry point: the named operator with ``Generator().manual_seed(seed)``."""
    validate_vit_growth(parent_cfg, child_cfg, op)
    return preserve(parent_state, parent_cfg, child_cfg, generator=torch.Generator().manual_seed(seed))
