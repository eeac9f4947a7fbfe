"""Pruning a Llama decoder down (``growth = "prune"``): importance on a calibration batch, then index selection.

Importance (Minitron's activation criteria; m(·) is the mean over the batch and tokens, `compt.prune`), measured
by forward hooks on the parent, in fp32 without gradients:

- attention head h of layer l:  A_{l,h} = m(‖o_{l,h}‖₂), o_{l,h} ∈ R^{head_dim} the head's attention output
  (the input of ``o_proj``, before the output projection);
- KV group g of layer l (grouped-query attention, G = H/K query heads per KV head, query head h reads KV head
  ⌊h/G⌋):  A_{l,g} = Σ_{h: ⌊h/G⌋ = g} A_{l,h};
- MLP unit u of layer l:  M_{l,u} = m(|a_{l,u}|), a = SiLU(gate(x)) ⊙ up(x) the input of ``down_proj``;
- hidden channel j:  C_j = Σ_n m(|R_n(x)_j|) over every RMSNorm n (both of each layer and the final norm);
- layer l:  BI_l = 1 − m(cos(x_l, y_l)) (`compt.prune`).

Selection (`keep`: the largest scores, in their original order): the L' layers of largest BI; the d' channels of
largest C (every tensor's hidden rows/columns, the embedding's and head's columns, the RMSNorm gains); per kept
layer the K' KV groups of largest A_{l,g}, kept whole (their k/v rows), and in each of them the G' = H'/K' query
heads of largest A_{l,h}; the I' units of largest M_{l,u} (gate/up rows, down columns). A child needs K' ≤ K and
G' ≤ G (the child's query heads divide into whole parent groups), the same head dim, vocabulary, context, RoPE θ
and ε; an untied parent head cannot become a tied one. Pruning only selects: the child's tensors are slices of
the parent's, so pruning then growing back with ``preserve`` reproduces every kept unit (scaled by s = √(d/d')
where the hidden width was cut, `compt.lm.growth`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from compt.errors import UserError
from compt.growth import StateDict, assert_shapes
from compt.lm.growth import EMBED, HEAD, NORM, check_lm_state, lm_expected_shapes
from compt.lm.models import LMConfig, create_lm
from compt.prune import Means, block_input, block_output, chunks, keep, remove

Tensor = torch.Tensor
SHAPE = ("hidden", "layers", "kv_heads", "intermediate")


def validate_lm_prune(parent: LMConfig, child: LMConfig) -> None:
    """Refuse a pruning that is not child ⊆ parent (one-line `UserError`)."""
    for what in ("vocab_size", "head_dim", "rope_theta", "rms_norm_eps", "context_length"):
        a, b = getattr(parent, what), getattr(child, what)
        if a != b:
            raise UserError(f"prune: {what} {a} -> {b} differs (pruning keeps it)")
    for what in (*SHAPE, "heads"):
        a, b = getattr(parent, what), getattr(child, what)
        if b > a:
            raise UserError(f"prune: {what} {a} -> {b} grows; the pruned model must be no larger than "
                            f"{parent.name} (use a growth operator to grow)")
    if child.group > parent.group:
        raise UserError(f"prune: {child.name}'s {child.heads} query heads over {child.kv_heads} KV heads need "
                        f"{child.group} per KV group, but {parent.name}'s groups hold {parent.group}: KV groups are "
                        f"kept whole, so the query heads per KV head must not grow")
    if child.tie_embeddings > parent.tie_embeddings:
        raise UserError(f"prune: {parent.name} has an untied LM head; a tied child ({child.name}) cannot keep it")


def measure_lm(model: torch.nn.Module, cfg: LMConfig, batch: Sequence[Tensor]) -> dict[str, Tensor]:
    """{"heads": (L, H), "mlp": (L, I), "channels": (d,), "blocks": (L,)} importance of `model` (of config `cfg`,
    eval mode, on the batch's device) on token windows ``batch[0]`` (B, context + 1) (module docstring)."""
    stats, handles, inputs = Means(), [], {}
    for i, layer in enumerate(model.model.layers):
        def heads(_m: Any, args: tuple, i: int = i) -> None:   # o_proj input (B, T, H·hd)
            o = args[0]
            stats.add(f"heads.{i}", o.reshape(*o.shape[:-1], cfg.heads, cfg.head_dim).norm(dim=-1)
                      .reshape(-1, cfg.heads).sum(0), o.shape[0] * o.shape[1])

        def block_in(_m: Any, args: tuple, kwargs: dict, i: int = i) -> None:
            inputs[i] = block_input(args, kwargs)

        def block_out(_m: Any, _args: tuple, out: Any, i: int = i) -> None:
            stats.add_block(f"blocks.{i}", inputs.pop(i), block_output(out))

        handles += [layer.self_attn.o_proj.register_forward_pre_hook(heads),
                    layer.mlp.down_proj.register_forward_pre_hook(
                        lambda _m, args, i=i: stats.add_abs(f"mlp.{i}", args[0])),
                    layer.register_forward_pre_hook(block_in, with_kwargs=True),
                    layer.register_forward_hook(block_out)]
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            handles.append(norm.register_forward_hook(lambda m, _a, out: stats.add_abs(f"norm.{id(m)}", out)))
    handles.append(model.model.norm.register_forward_hook(lambda m, _a, out: stats.add_abs(f"norm.{id(m)}", out)))
    try:
        with torch.no_grad():
            for tokens, *_ in chunks(batch):
                model(input_ids=tokens[:, :-1])
    finally:
        remove(handles)
    layers = range(cfg.layers)
    return {"heads": torch.stack([stats.mean(f"heads.{i}") for i in layers]),
            "mlp": torch.stack([stats.mean(f"mlp.{i}") for i in layers]),
            "channels": sum(stats.mean(k) for k in stats.total if k.startswith("norm.")),
            "blocks": torch.stack([stats.mean(f"blocks.{i}") for i in layers])}


def select_lm(importance: dict[str, Tensor], parent: LMConfig, child: LMConfig) -> dict[str, Any]:
    """What the child keeps (module docstring): {"layers": [l…], "channels": [j…], "groups": per kept layer
    [g…], "heads": per kept layer [h…] (parent query heads, grouped by kept KV group), "units": per kept layer}."""
    layers = keep(importance["blocks"], child.layers).tolist()
    groups, heads, units = [], [], []
    for layer in layers:
        a = importance["heads"][layer].reshape(parent.kv_heads, parent.group)
        kept_groups = keep(a.sum(1), child.kv_heads).tolist()
        groups.append(kept_groups)
        heads.append([g * parent.group + int(t) for g in kept_groups for t in keep(a[g], child.group)])
        units.append(keep(importance["mlp"][layer], child.intermediate).tolist())
    return {"layers": layers, "channels": keep(importance["channels"], child.hidden).tolist(),
            "groups": groups, "heads": heads, "units": units}


def _rows(heads: Sequence[int], head_dim: int) -> Tensor:
    """Row indices of `heads` in a (heads · head_dim, ·) projection."""
    return torch.tensor([h * head_dim + r for h in heads for r in range(head_dim)], dtype=torch.long)


def prune_lm(parent_state: StateDict, parent_cfg: LMConfig, child_cfg: LMConfig, kept: dict[str, Any]
             ) -> StateDict:
    """The child's state dict: the parent's tensors at the `kept` indices (`select_lm`), shapes asserted."""
    check_lm_state(parent_state, parent_cfg)
    c = torch.tensor(kept["channels"], dtype=torch.long)
    hd = parent_cfg.head_dim
    out: StateDict = {EMBED: parent_state[EMBED][:, c].clone(), NORM: parent_state[NORM][c].clone()}
    for j, layer in enumerate(kept["layers"]):
        src, dst = f"model.layers.{layer}.", f"model.layers.{j}."
        q, kv = _rows(kept["heads"][j], hd), _rows(kept["groups"][j], hd)
        u = torch.tensor(kept["units"][j], dtype=torch.long)
        for name, rows in (("self_attn.q_proj", q), ("self_attn.k_proj", kv), ("self_attn.v_proj", kv),
                           ("mlp.gate_proj", u), ("mlp.up_proj", u)):
            out[f"{dst}{name}.weight"] = parent_state[f"{src}{name}.weight"][rows][:, c].clone()
        for name, cols in (("self_attn.o_proj", q), ("mlp.down_proj", u)):
            out[f"{dst}{name}.weight"] = parent_state[f"{src}{name}.weight"][c][:, cols].clone()
        for norm in ("input_layernorm", "post_attention_layernorm"):
            out[f"{dst}{norm}.weight"] = parent_state[f"{src}{norm}.weight"][c].clone()
    head = parent_state[EMBED if parent_cfg.tie_embeddings else HEAD]
    out[HEAD] = out[EMBED] if child_cfg.tie_embeddings else head[:, c].clone()
    return assert_shapes(out, lm_expected_shapes(child_cfg))


def prune_lm_model(parent_state: StateDict, parent_cfg: LMConfig, child_cfg: LMConfig, batch: Sequence[Tensor],
                   device: torch.device | str = "cpu") -> tuple[StateDict, dict[str, Any]]:
    """Validate, measure on `batch` (token windows), select and slice: (child state, {"importance", "kept"})."""
    validate_lm_prune(parent_cfg, child_cfg)
    check_lm_state(parent_state, parent_cfg)
    model = create_lm(parent_cfg, state_dict=parent_state).to(device).eval()
    importance = measure_lm(model, parent_cfg, [t.to(device) for t in batch])
    kept = select_lm(importance, parent_cfg, child_cfg)
    return prune_lm(parent_state, parent_cfg, child_cfg, kept), {"importance": importance, "kept": kept}
