"""Growth operators for Llama decoders: ``(parent_state, parent_cfg, child_cfg, *, generator) -> child_state``.

State dicts are `LlamaForCausalLM`'s (``model.embed_tokens.weight`` (V, d), ``model.layers.i.self_attn.
{q,k,v,o}_proj.weight``, ``mlp.{gate,up,down}_proj.weight``, ``{input,post_attention}_layernorm.weight``,
``model.norm.weight``, ``lm_head.weight``; the tied head is stored under both keys).

**preserve** (exact). Notation: parent hidden d, child d' ≥ d, s = √(d'/d). RMSNorm is
R(x) = g ⊙ x / √(mean(x²) + ε). The child's residual stream is kept equal to E x with E = s·[I; 0]
(parent channels scaled by s, new channels zero). Because EᵀE = (d'/d) I, mean over d' of (E x)² equals the
parent's mean over d of x², so every child RMSNorm sees the parent's RMS — *with the same ε* — and its
normalised input is E n. Then:

- embedding: rows s·[e; 0] (new columns zero);
- reads (q, k, v, gate, up, untied lm_head reading an RMSNorm): child gains [g/s; ḡ], child weight
  [W, ·]: the parent block reads g ⊙ n exactly; the new columns (fresh init) read channels that are zero;
- writes (o_proj, down_proj): s·[W; 0] on the parent heads / hidden units, zero for new rows, new heads and
  new units, so the stream's new channels stay zero;
- tied head: lm_head = child embedding = s·[E; 0], so the final gains become g/s² (s from the stream and
  s from the head cancel);
- heads (fixed head dim, grouped-query attention, H/K query heads per KV head): child KV heads m·j … m·j+m−1
  copy parent KV head j (m = ⌈G/G'⌉ with G = H/K, G' = H'/K'), parent query head j·G + t goes to child KV
  head m·j + ⌊t/G'⌋, slot t mod G'; RoPE acts per head with the same dim and θ, so attention is unchanged;
  new heads are fresh behind zero o_proj columns;
- MLP: parent units first, new units fresh with zero down_proj columns;
- depth: parent layer i → child layer ⌊i·L'/L⌋ (`compt.growth.identity_depth`); the inserted layers
  are exact identities (o_proj and down_proj zero, the rest fresh).

Symmetry breaking: every new input column of a read starts with its own fresh random values (it multiplies
a zero channel, so it changes nothing at step 0), which gives each new stream channel a distinct gradient on
its zero write rows and embedding column at the first step; new heads, units and identity layers start fresh
behind zero output projections. After one optimizer step every new parameter has a non-zero gradient.

**stack**: the same exact widening, depth by progressive stacking (child layer j = parent layer j mod L).
**corner**: the paper's corner copy (every parent tensor into the leading corner of the child's, layer
i → i, gains included; not function-preserving), for comparison.
"""

from __future__ import annotations

import functools
import math

import torch

from compt.errors import UserError, unknown_name
from compt.growth import (
    DepthRule,
    StateDict,
    assert_shapes,
    check_shapes,
    corner_copy,
    fresh_child,
    identity_depth,
    meta_shapes,
    one_thread,
    put,
    stacked_depth,
)
from compt.lm.models import LMConfig, build_lm

Tensor = torch.Tensor
EMBED, HEAD, NORM = "model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"


# ----------------------------------------------------------------------------------------------- layout
def key_place(cfg: LMConfig, key: str) -> tuple[str, float]:
    """(tower, depth) of a Llama state-dict key (`compt.inherit`): one tower (""); depth −1 for the embedding
    (and a tied head, which is the embedding), i for ``model.layers.i``, ∞ for the final norm and an untied
    head."""
    if key == EMBED or (key == HEAD and cfg.tie_embeddings):
        return "", -1.0
    if key.startswith("model.layers."):
        return "", float(key.split(".")[2])
    return "", math.inf


# ----------------------------------------------------------------------------------------------- validation
def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise UserError(msg)


def validate_lm_growth(parent: LMConfig, child: LMConfig) -> None:
    """Refuse growth that is not parent ⊆ child (one-line `UserError`)."""
    for what in ("vocab_size", "head_dim", "rope_theta", "rms_norm_eps"):
        a, b = getattr(parent, what), getattr(child, what)
        _check(a == b, f"{what} {a} -> {b} differs (growth keeps it)")
    for what in ("hidden", "layers", "heads", "kv_heads", "intermediate"):
        a, b = getattr(parent, what), getattr(child, what)
        _check(b >= a, f"{what} {a} -> {b} shrinks")
    need = parent.kv_heads * kv_copies(parent, child)
    _check(need <= child.kv_heads, f"KV heads {parent.kv_heads} -> {child.kv_heads}: the parent's "
           f"{parent.group} query heads per KV head need {need} child KV heads at {child.group} per KV head")
    _check(child.tie_embeddings <= parent.tie_embeddings,
           f"{parent.name} has an untied LM head; a tied child ({child.name}) cannot preserve it")


def kv_copies(parent: LMConfig, child: LMConfig) -> int:
    """m = ⌈G/G'⌉: child KV heads that carry one parent KV head."""
    return -(-parent.group // child.group)


@functools.lru_cache(maxsize=64)
def lm_expected_shapes(cfg: LMConfig) -> dict[str, tuple[int, ...]]:
    """Key → shape of `build_lm(cfg).state_dict()`."""
    return meta_shapes(build_lm, cfg)


def check_lm_state(state: StateDict, cfg: LMConfig, what: str = "parent") -> None:
    check_shapes(state, lm_expected_shapes(cfg), cfg.name, what)


# ----------------------------------------------------------------------------------------------- operators
def preserve(parent_state: StateDict, parent_cfg: LMConfig, child_cfg: LMConfig, *,
             generator: torch.Generator) -> StateDict:
    """Exact function-preserving growth (module docstring)."""
    return _widen(parent_state, parent_cfg, child_cfg, generator, identity_depth)


def stack(parent_state: StateDict, parent_cfg: LMConfig, child_cfg: LMConfig, *,
          generator: torch.Generator) -> StateDict:
    """`preserve`'s exact widening; depth by stacking, child layer j = parent layer j mod L."""
    return _widen(parent_state, parent_cfg, child_cfg, generator, stacked_depth)


def corner(parent_state: StateDict, parent_cfg: LMConfig, child_cfg: LMConfig, *,
           generator: torch.Generator) -> StateDict:
    """The paper's corner copy: parent tensor → leading corner of the same child key (layer i → i)."""
    c = fresh_child(child_cfg, generator, build_lm)
    with torch.no_grad(), one_thread():
        for key, value in parent_state.items():
            assert key in c, f"corner: parent key {key} has no child key"
            corner_copy(c[key], value)
        if child_cfg.tie_embeddings:
            c[HEAD] = c[EMBED]
    return assert_shapes(c, lm_expected_shapes(child_cfg))


LM_GROWTH_OPS = {"preserve": preserve, "stack": stack, "corner": corner}


def grow_lm(parent_state: StateDict, parent_cfg: LMConfig, child_cfg: LMConfig, op: str, seed: int = 0
            ) -> StateDict:
    """Validate, check the parent's shapes and run operator `op` (deterministic in `seed`)."""
    if op not in LM_GROWTH_OPS:
        raise unknown_name("growth operator", op, LM_GROWTH_OPS)
    validate_lm_growth(parent_cfg, child_cfg)
    check_lm_state(parent_state, parent_cfg)
    return LM_GROWTH_OPS[op](parent_state, parent_cfg, child_cfg, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------- preserve
def _widen(p: StateDict, pc: LMConfig, cc: LMConfig, generator: torch.Generator, depth: DepthRule) -> StateDict:
    c = fresh_child(cc, generator, build_lm)
    s = math.sqrt(cc.hidden / pc.hidden)
    with torch.no_grad(), one_thread():
        _write(c, EMBED, s * p[EMBED].float(), cols=pc.hidden, zero_rest=True)
        for j, i in enumerate(depth(pc.layers, cc.layers)):
            if i is None:
                for name in ("self_attn.o_proj.weight", "mlp.down_proj.weight"):
                    put(c, f"model.layers.{j}.{name}", torch.zeros_like(c[f"model.layers.{j}.{name}"]))
            else:
                _layer(p, c, f"model.layers.{i}.", f"model.layers.{j}.", pc, cc, s)
        _gain(c, NORM, p[NORM], s * s if cc.tie_embeddings else s)
        if cc.tie_embeddings:
            c[HEAD] = c[EMBED]
        else:
            _write(c, HEAD, p[HEAD].float(), cols=pc.hidden, zero_rest=False)
    return assert_shapes(c, lm_expected_shapes(cc))


def _write(c: StateDict, key: str, value: Tensor, *, cols: int, zero_rest: bool) -> None:
    """c[key][:rows, :cols] = value; with `zero_rest` the remaining columns of those rows become zero."""
    rows = value.shape[0]
    put(c, key, value, (slice(0, rows), slice(0, cols)))
    if zero_rest:
        put(c, key, torch.zeros(rows, c[key].shape[1] - cols), (slice(0, rows), slice(cols, None)))


def _gain(c: StateDict, key: str, g: Tensor, scale: float) -> None:
    """RMSNorm gains [g/scale; ḡ/scale]: the new channels are zero at step 0, their gain only sets its scale."""
    top = g.float() / scale
    put(c, key, torch.cat([top, top.mean().expand(c[key].numel() - top.numel())]))


def head_rows(head: int, head_dim: int) -> slice:
    return slice(head * head_dim, (head + 1) * head_dim)


def head_map(pc: LMConfig, cc: LMConfig) -> tuple[list[int], list[int]]:
    """(child query head of each parent query head, parent KV head of each carrying child KV head)."""
    m = kv_copies(pc, cc)
    q = [(m * (h // pc.group) + (h % pc.group) // cc.group) * cc.group + (h % pc.group) % cc.group
         for h in range(pc.heads)]
    kv = [c // m for c in range(m * pc.kv_heads)]
    return q, kv


def _layer(p: StateDict, c: StateDict, src: str, dst: str, pc: LMConfig, cc: LMConfig, s: float) -> None:
    """One decoder layer: head-aware attention, SwiGLU MLP, gains scaled by 1/s, writes by s."""
    d, hd = pc.hidden, pc.head_dim
    q_map, kv_map = head_map(pc, cc)
    for name, heads in (("q_proj", list(enumerate(q_map))), ("k_proj", [(j, c_) for c_, j in enumerate(kv_map)]),
                        ("v_proj", [(j, c_) for c_, j in enumerate(kv_map)])):
        w = p[f"{src}self_attn.{name}.weight"].float()
        for ph, ch in heads:
            put(c, f"{dst}self_attn.{name}.weight", w[head_rows(ph, hd)], (head_rows(ch, hd), slice(0, d)))
    o_key = f"{dst}self_attn.o_proj.weight"
    put(c, o_key, torch.zeros_like(c[o_key]))
    w_o = p[f"{src}self_attn.o_proj.weight"].float()
    for ph, ch in enumerate(q_map):
        put(c, o_key, s * w_o[:, head_rows(ph, hd)], (slice(0, d), head_rows(ch, hd)))
    for name in ("gate_proj", "up_proj"):
        _write(c, f"{dst}mlp.{name}.weight", p[f"{src}mlp.{name}.weight"].float(), cols=d, zero_rest=False)
    down = f"{dst}mlp.down_proj.weight"
    put(c, down, torch.zeros_like(c[down]))
    put(c, down, s * p[f"{src}mlp.down_proj.weight"].float(), (slice(0, d), slice(0, pc.intermediate)))
    for norm in ("input_layernorm", "post_attention_layernorm"):
        _gain(c, f"{dst}{norm}.weight", p[f"{src}{norm}.weight"], s)
