"""Find which registered model a bare open_clip state dict belongs to, by matching every key and shape."""

from __future__ import annotations

import re

import torch

from compt.clip.growth.common import expected_shapes
from compt.clip.models import ModelConfig, get_model_config, list_models
from compt.errors import UserError

_BLOCK = re.compile(r"^(visual\.transformer|transformer)\.resblocks\.(\d+)\.")


def _signature(shapes: dict[str, tuple[int, ...]]) -> tuple:
    """Cheap fingerprint: a few defining shapes plus the block count of each tower."""
    keys = ("visual.conv1.weight", "visual.positional_embedding", "visual.trunk.patch_embed.proj.weight",
            "token_embedding.weight", "positional_embedding", "text_projection")
    blocks = {(m.group(1), m.group(2)) for k in shapes if (m := _BLOCK.match(k))}
    return (*(shapes.get(k) for k in keys), sum(t == "visual.transformer" for t, _ in blocks), len(blocks))


def _vit_signature(cfg: ModelConfig) -> tuple:
    """`_signature` computed from a ViT config without building it."""
    v, t = cfg.vision, cfg.text
    return ((v.width, 3, v.patch_size, v.patch_size), ((v.image_size // v.patch_size) ** 2 + 1, v.width), None,
            (t.vocab_size, t.width), (t.context_length, t.width), (t.width, cfg.embed_dim), v.layers,
            v.layers + t.layers)


def matching_models(state: dict[str, torch.Tensor]) -> list[ModelConfig]:
    """Every registered model (compt families first, then upstream open_clip) whose state-dict shapes match."""
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    sig = _signature(shapes)
    out = []
    for name in list_models():
        cfg = get_model_config(name)
        if not cfg.is_swin and _vit_signature(cfg) != sig:
            continue
        if expected_shapes(cfg) == shapes:
            out.append(cfg)
    return out


def infer_model_config(state: dict[str, torch.Tensor]) -> tuple[ModelConfig, list[str]]:
    """The model a state dict belongs to, and the other names with the identical architecture.

    Shapes do not pin down head counts, so several registered names can match; that is only ambiguous
    when they build different models (then the user must pass the name explicitly).
    """
    found = matching_models(state)
    if not found:
        raise UserError("the checkpoint's state dict matches no registered model; pass --from-model NAME")
    first = found[0]
    different = [c.name for c in found if c.to_open_clip() != first.to_open_clip()]
    if different:
        names = ", ".join(c.name for c in found[:6])
        raise UserError(f"the checkpoint's shapes match several different models ({names}); "
                        "pass --from-model NAME")
    return first, [c.name for c in found[1:]]
