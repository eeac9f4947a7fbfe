"""`preserve` (exact, function-preserving growth) and `stack` (same widening, depth by stacking).

`preserve`: right after growth the child computes the parent's image and text embeddings (zero-padded when
the embedding grows) to float tolerance, for any width ratio (768 → 1024 included), any head-count change
with equal head dim, and any depth ratio, on both ViT towers. Per tower (math in `compt.clip.growth.width`):

- residual stream: child stream = E · parent stream with E LN-compatible (E 1 = 1, EᵀE = (w'/w) I), so every
  LayerNorm sees the same mean and variance. Text: E = E₀ (parent channels in place, deviations × √(w'/w),
  new channels hold the mean). Vision: E is solved from the parent's `ln_pre` gains so that the child's
  ln_pre (whose output *is* the stream) reproduces it exactly; it equals E₀ for constant gains.
- reads (LN → in_proj / c_fc / proj): W' = W diag(γ) Eᵀ diag(1/γ') / (w'/w); biases absorb β.
- attention, head-aware: parent head h goes to child head h's slot in each of the q, k and v blocks of the
  fused in_proj ([q; k; v], rows h·d … (h+1)·d of each block); new heads get fresh q/k/v and zero
  out_proj columns, so they add nothing until trained.
- MLP: parent hidden units first, new units fresh with zero c_proj columns.
- writes (out_proj, c_proj and their biases): E W, E b.
- depth: parent block i goes to child block ⌊i · L'/L⌋; the new blocks in between are exact identities
  (attn.out_proj and mlp.c_proj weights and biases zero, everything else fresh). Works for 6→12, 12→24, 12→18.
- embedding growth: the new output dims read only directions the child's LayerNorm output never has at
  step 0, so they are exactly zero and the old dims are unchanged. logit_scale is inherited.

Symmetry breaking: new stream channels start as copies of the mean (text) or of one shared signal
(vision), so every layer reading the stream gets *cancelling noise* on its parent rows: a fresh random
read restricted to directions orthogonal to every possible child LN output (`width.null_noise`). It adds
exactly nothing at step 0 but gives each new channel its own gradient, so they diverge under training; new
heads, hidden units and identity blocks start from fresh random weights behind zero output projections.

`stack` widens exactly like `preserve` but grows depth by progressive stacking (Gong et al., 2019; the
depth step of bert2BERT): child block j is a copy of parent block j mod L, so a deeper child is *not*
function-preserving. It isolates the depth rule (copies vs identities) as an ablation axis.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from compt.clip.growth.common import assert_child, start_state
from compt.clip.growth.width import StreamMap, grow_embedding_ln, mean_pad_map, null_noise, read_through_ln
from compt.clip.models import ModelConfig
from compt.errors import UserError
from compt.growth import DepthRule, StateDict, identity_depth, one_thread, put, stacked_depth

_ROW_CHUNK = 8192


@dataclass(frozen=True)
class Tower:
    """Block-stack shape of one tower, enough to map its blocks."""

    prefix: str       # 'visual.transformer.resblocks.' or 'transformer.resblocks.'
    width: int
    layers: int
    hidden: int       # MLP width
    head_width: int

    @property
    def heads(self) -> int:
        return self.width // self.head_width


def _towers(cfg: ModelConfig) -> tuple[Tower, Tower]:
    v, t = cfg.vision, cfg.text
    return (Tower("visual.transformer.resblocks.", v.width, v.layers, int(v.width * v.mlp_ratio), v.head_width),
            Tower("transformer.resblocks.", t.width, t.layers, int(t.width * t.mlp_ratio), t.head_width))


OUT_KEYS = ("attn.out_proj.weight", "attn.out_proj.bias", "mlp.c_proj.weight", "mlp.c_proj.bias")


class UnitRule(Protocol):
    """How an exact operator starts the child's new heads, hidden units and inserted blocks.

    `grown` runs after parent block → child block `d` was written (parent heads and units in the leading
    slots, the new ones fresh behind zero output columns); `inserted` starts an inserted block `d` whose
    output must be exactly zero. Both may only change the block's function in directions that cancel.
    """

    def grown(self, c: StateDict, d: str, pt: Tower, ct: Tower, e: StreamMap, noise: float) -> None: ...

    def inserted(self, c: StateDict, d: str, ct: Tower, e: StreamMap, noise: float) -> None: ...


class SilentUnits:
    """`preserve`'s rule: new heads, units and inserted blocks are fresh behind zero output projections."""

    def grown(self, c: StateDict, d: str, pt: Tower, ct: Tower, e: StreamMap, noise: float) -> None:
        return None

    def inserted(self, c: StateDict, d: str, ct: Tower, e: StreamMap, noise: float) -> None:
        for name in OUT_KEYS:
            put(c, d + name, torch.zeros_like(c[d + name]))


def preserve(parent_state: StateDict, parent_cfg: ModelConfig, child_cfg: ModelConfig, *,
             generator: torch.Generator, fresh: StateDict | None = None, noise: float = 1.0) -> StateDict:
    """Function-preserving growth (module docstring); `noise` scales the cancelling symmetry-breaking noise."""
    return widen(parent_state, parent_cfg, child_cfg, generator, fresh, noise, identity_depth, "preserve",
                 SilentUnits())


def stack(parent_state: StateDict, parent_cfg: ModelConfig, child_cfg: ModelConfig, *,
          generator: torch.Generator, fresh: StateDict | None = None, noise: float = 1.0) -> StateDict:
    """Exact widening as `preserve`, depth by stacking: child block j = parent block j mod L (module docstring)."""
    return widen(parent_state, parent_cfg, child_cfg, generator, fresh, noise, stacked_depth, "stack",
                 SilentUnits())


def check_supported(op: str, parent_cfg: ModelConfig, child_cfg: ModelConfig) -> None:
    """`preserve` and `stack` grow ViT towers only: a Swin pair is a one-line `UserError` (before any training)."""
    if parent_cfg.is_swin or child_cfg.is_swin:
        raise UserError(f"growth operator {op!r} does not support Swin vision towers "
                        f"({parent_cfg.name} -> {child_cfg.name}); use 'corner'")


def widen(p: StateDict, parent_cfg: ModelConfig, child_cfg: ModelConfig, generator: torch.Generator,
          fresh: StateDict | None, noise: float, depth: DepthRule, op: str, units: UnitRule) -> StateDict:
    """Exact widening shared by `preserve`, `stack` and `split`: stream map, reads and writes, `depth`'s block
    mapping, new and inserted units started by `units`."""
    check_supported(op, parent_cfg, child_cfg)
    c = start_state(child_cfg, generator, fresh)
    (pv, pt), (cv, ct) = _towers(parent_cfg), _towers(child_cfg)
    with torch.no_grad(), one_thread():
        ev = _vision_embeddings(p, c, cv.width, generator)
        _blocks(p, c, pv, cv, ev, depth(pv.layers, cv.layers), noise, units)
        _head(p, c, "visual.ln_post", "visual.proj", ev, noise)
        et = mean_pad_map(pt.width, ct.width)
        for key in ("token_embedding.weight", "positional_embedding"):
            _put_rows(c, key, p[key], et.embed)
        _blocks(p, c, pt, ct, et, depth(pt.layers, ct.layers), noise, units)
        _head(p, c, "ln_final", "text_projection", et, noise)
        for key in ("logit_scale", "logit_bias"):   # logit_bias: SigLIP models only
            if key in c:
                put(c, key, p[key])
    return assert_child(c, child_cfg)


def _put_rows(c: StateDict, key: str, src: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """c[key] = fn(src) computed in row chunks (bounds the temporaries for the 49408-row token table)."""
    for i in range(0, src.shape[0], _ROW_CHUNK):
        put(c, key, fn(src[i:i + _ROW_CHUNK].float()), slice(i, i + _ROW_CHUNK))


def _vision_embeddings(p: StateDict, c: StateDict, w2: int, generator: torch.Generator) -> StreamMap:
    """Patch conv, class and positional embeddings through F, and the exact child ln_pre; returns E."""
    emb = grow_embedding_ln(p["visual.ln_pre.weight"], p["visual.ln_pre.bias"], w2, generator)
    f = emb.input_map                                                    # (w', w)
    conv = p["visual.conv1.weight"].double()                             # (w, 3, P, P)
    put(c, "visual.conv1.weight", (f @ conv.flatten(1)).reshape(w2, *conv.shape[1:]))
    put(c, "visual.class_embedding", f @ p["visual.class_embedding"].double())
    put(c, "visual.positional_embedding", p["visual.positional_embedding"].double() @ f.T)
    put(c, "visual.ln_pre.weight", emb.gamma)
    put(c, "visual.ln_pre.bias", emb.beta)
    return emb.stream


def _blocks(p: StateDict, c: StateDict, pt: Tower, ct: Tower, e: StreamMap, src: list[int | None],
            noise: float, units: UnitRule) -> None:
    for j, i in enumerate(src):
        dst = f"{ct.prefix}{j}."
        if i is None:
            units.inserted(c, dst, ct, e, noise)
        else:
            _block(p, c, f"{pt.prefix}{i}.", dst, pt, e, noise)
            units.grown(c, dst, pt, ct, e, noise)


def _block(p: StateDict, c: StateDict, s: str, d: str, pt: Tower, e: StreamMap, noise: float) -> None:
    """One residual block: head-aware attention and MLP, reads through E and LN gains, writes through E."""
    w, w2, h = e.w, e.w2, pt.hidden
    qkv = torch.cat([torch.arange(w) + k * w2 for k in range(3)])       # parent head slots in q, k and v
    _read(p, c, s + "ln_1", s + "attn.in_proj", d + "ln_1", d + "attn.in_proj", e, qkv, noise)
    _write(p, c, s + "attn.out_proj", d + "attn.out_proj", e, w)
    _read(p, c, s + "ln_2", s + "mlp.c_fc", d + "ln_2", d + "mlp.c_fc", e, torch.arange(h), noise)
    _write(p, c, s + "mlp.c_proj", d + "mlp.c_proj", e, h)


def _read(p: StateDict, c: StateDict, ln: str, lin: str, ln_c: str, lin_c: str, e: StreamMap,
          rows: torch.Tensor, noise: float) -> None:
    """LN + linear reading the stream; parent rows go to `rows` of the child weight, the rest stay fresh."""
    wkey = "_weight" if lin.endswith("in_proj") else ".weight"
    bkey = "_bias" if lin.endswith("in_proj") else ".bias"
    r = read_through_ln(e, p[ln + ".weight"], p[ln + ".bias"], p[lin + wkey], p[lin + bkey])
    put(c, ln_c + ".weight", r.gamma)
    put(c, ln_c + ".bias", r.beta)
    weight = r.weight + noise * null_noise(e, r.gamma, c[lin_c + wkey][rows]) if noise else r.weight
    put(c, lin_c + wkey, weight, rows)
    put(c, lin_c + bkey, r.bias, rows)


def _write(p: StateDict, c: StateDict, lin: str, lin_c: str, e: StreamMap, n_in: int) -> None:
    """Linear writing into the stream: parent inputs (heads / hidden units) first, new inputs zeroed."""
    weight = c[lin_c + ".weight"]
    put(c, lin_c + ".weight", e.embed(p[lin + ".weight"].float(), 0), (slice(None), slice(0, n_in)))
    put(c, lin_c + ".weight", torch.zeros_like(weight[:, n_in:]), (slice(None), slice(n_in, None)))
    put(c, lin_c + ".bias", e.embed(p[lin + ".bias"].double(), 0))


def _head(p: StateDict, c: StateDict, ln: str, proj: str, e: StreamMap, noise: float) -> None:
    """Final LN + bias-free projection (x @ proj, proj (w, embed)); new embedding dims read null directions."""
    r = read_through_ln(e, p[ln + ".weight"], p[ln + ".bias"], p[proj].T, None)
    put(c, ln + ".weight", r.gamma)
    put(c, ln + ".bias", r.beta)
    n_old = r.weight.shape[0]
    put(c, proj, r.weight.T, (slice(None), slice(0, n_old)))
    new = c[proj][:, n_old:]
    if new.shape[1]:
        extra = noise * null_noise(e, r.gamma, new.T).T if noise else torch.zeros_like(new)
        put(c, proj, extra, (slice(None), slice(n_old, None)))
