"""Model configs, the registry of named sizes and families, and the open_clip model factory.

Every model compt trains is a plain open_clip `CLIP` (ViT or timm-Swin vision tower + open_clip text
transformer). A `ModelConfig` is the single description of its shape; `to_open_clip()` turns it into the
`model_cfg` dict open_clip builds from, so checkpoints load in open_clip unchanged.

Names:
- bare open_clip names (``ViT-B-16``, ``ViT-S-16`` …) are upstream's configs, exactly as open_clip has them;
- ``paper/…`` is the CoM-PT paper's family (embed 512, text widths of SPEC §6), e.g. ``paper/ViT-S-16``;
- ``tiny/…`` is a structurally identical CPU family (32×32 images, patch 4, context 32);
- ``test/…`` is a test-size family that trains in seconds.

Every paradigm's ``models`` module has the same names (`MODEL_API`): its config class under its own name
(`ClipConfig`, the same class as `ModelConfig`) and the timm-style registry and factory `get_model_config`,
`list_models`, `list_families`, `register_family`, `build_model` (what `Paradigm.build` calls), `create_model`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compt.clip.swin import SwinConfig, ensure_registered
from compt.errors import unknown_name

if TYPE_CHECKING:  # configs and the registry need no torch (`compt models` stays fast); building does
    import torch

__all__ = ["SwinConfig"]  # re-exported: the Swin trunk's config is part of a ModelConfig
# the names every paradigm's models module has (`compt.lm.models` has the same; the config under its own name)
MODEL_API = ("get_model_config", "list_models", "list_families", "register_family", "build_model", "create_model")


@dataclass(frozen=True, kw_only=True)
class VisionConfig:
    """Vision tower. For a ViT, heads = width / head_width; `swin` replaces the ViT when set."""

    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    layers: int = 12
    head_width: int = 64
    mlp_ratio: float = 4.0
    swin: SwinConfig | None = None
    patch_dropout: float = 0.0   # fraction of patch tokens dropped in training (FLIP; open_clip's PatchDropout)

    @property
    def heads(self) -> int:
        return self.width // self.head_width

    @property
    def kept_patches(self) -> int:
        """Patch tokens the blocks see in training: open_clip keeps max(1, ⌊P·(1 − p)⌋) of the P patches."""
        patches = (self.image_size // self.patch_size) ** 2
        return max(1, int(patches * (1 - self.patch_dropout))) if self.patch_dropout else patches

    @property
    def num_tokens(self) -> int:
        """Sequence length of the ViT: patches + class token."""
        return (self.image_size // self.patch_size) ** 2 + 1


@dataclass(frozen=True, kw_only=True)
class TextConfig:
    """open_clip text transformer: causal, EOT (argmax) pooling, ln_final, linear projection."""

    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    heads: int = 8
    layers: int = 12
    mlp_ratio: float = 4.0

    @property
    def head_width(self) -> int:
        return self.width // self.heads


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """One CLIP model: both towers and the shared embedding size."""

    name: str
    embed_dim: int = 512
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    family: str = ""
    init_logit_bias: float | None = None   # set: a learnable logit bias (SigLIP; see `compt.clip.siglip`)

    @property
    def is_swin(self) -> bool:
        return self.vision.swin is not None

    def to_open_clip(self) -> dict[str, Any]:
        """The `model_cfg` dict open_clip's `CLIP(**cfg)` / `open_clip_config.json` expects."""
        v = self.vision
        if v.swin is not None:
            vision: dict[str, Any] = {"timm_model_name": v.swin.timm_name, "timm_model_pretrained": False,
                                      "timm_pool": "avg", "timm_proj": "linear", "image_size": v.image_size}
        else:
            vision = {"image_size": v.image_size, "layers": v.layers, "width": v.width,
                      "head_width": v.head_width, "mlp_ratio": v.mlp_ratio, "patch_size": v.patch_size}
            if v.patch_dropout:
                vision["patch_dropout"] = v.patch_dropout
        t = self.text
        text = {"context_length": t.context_length, "vocab_size": t.vocab_size, "width": t.width,
                "heads": t.heads, "layers": t.layers, "mlp_ratio": t.mlp_ratio}
        out = {"embed_dim": self.embed_dim, "vision_cfg": vision, "text_cfg": text}
        return out if self.init_logit_bias is None else {**out, "init_logit_bias": self.init_logit_bias}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        v = dict(d["vision"])
        if v.get("swin") is not None:
            s = dict(v["swin"])
            v["swin"] = SwinConfig(**{**s, "depths": tuple(s["depths"]), "num_heads": tuple(s["num_heads"])})
        return cls(name=d["name"], embed_dim=d["embed_dim"], family=d.get("family", ""),
                   vision=VisionConfig(**v), text=TextConfig(**d["text"]), init_logit_bias=d.get("init_logit_bias"))


# ----------------------------------------------------------------------------------------------- registry
_MODELS: dict[str, ModelConfig] = {}
_FAMILIES: dict[str, tuple[str, ...]] = {}


def register(cfg: ModelConfig) -> ModelConfig:
    if cfg.name in _MODELS and _MODELS[cfg.name] != cfg:
        raise ValueError(f"model name {cfg.name!r} already registered with a different shape")
    _MODELS[cfg.name] = cfg
    return cfg


def register_family(name: str, members: list[ModelConfig]) -> None:
    """A family is an ordered (ascending compute) tuple of registered model names."""
    for m in members:
        register(dataclasses.replace(m, family=name))
    _FAMILIES[name] = tuple(m.name for m in members)


def _vit(name: str, vw: int, vl: int, tw: int, th: int, embed: int, *, image: int = 224, patch: int = 16,
         head_width: int = 64, ctx: int = 77, tl: int = 12) -> ModelConfig:
    return ModelConfig(
        name=name, embed_dim=embed,
        vision=VisionConfig(image_size=image, patch_size=patch, width=vw, layers=vl, head_width=head_width),
        text=TextConfig(context_length=ctx, width=tw, heads=th, layers=tl),
    )


def _swin(name: str, c: int, depths: tuple[int, ...], tw: int, th: int, *, embed: int = 512, image: int = 224,
          patch: int = 4, window: int = 7, ctx: int = 77, tl: int = 12, head_width: int = 32) -> ModelConfig:
    heads = tuple(c * 2**i // head_width for i in range(len(depths)))
    swin = SwinConfig(embed_dim=c, depths=depths, num_heads=heads, patch_size=patch, window_size=window)
    return ModelConfig(name=name, embed_dim=embed,
                       vision=VisionConfig(image_size=image, patch_size=patch, width=c, swin=swin),
                       text=TextConfig(context_length=ctx, width=tw, heads=th, layers=tl))


# The paper's ViT family (SPEC §6): patch 16, image 224, heads = width / 64, text 12 layers.
register_family("paper", [
    _vit("paper/ViT-N-16", 192, 6, 256, 4, 512),
    _vit("paper/ViT-T-16", 192, 12, 256, 4, 512),
    _vit("paper/ViT-C-16", 256, 12, 320, 5, 512),
    _vit("paper/ViT-S-16", 384, 12, 384, 6, 512),
    _vit("paper/ViT-M-16", 512, 12, 448, 7, 512),
    _vit("paper/ViT-B-16", 768, 12, 512, 8, 512),
    _vit("paper/ViT-BL-16", 1024, 12, 768, 12, 768),
    _vit("paper/ViT-L-16", 1024, 24, 768, 12, 512),
])

# The paper's Swin family: timm Swin trunks (window 7, patch 4) + avg-pool + linear to 512.
register_family("paper-swin", [
    _swin("paper/Swin-N", 64, (2, 2, 6, 2), 256, 4),
    _swin("paper/Swin-T", 96, (2, 2, 6, 2), 384, 6),
    _swin("paper/Swin-S", 96, (2, 2, 18, 2), 512, 8),
    _swin("paper/Swin-B", 128, (2, 2, 18, 2), 512, 8),
    _swin("paper/Swin-L", 192, (2, 2, 18, 2), 768, 12),
])


def _tiny(name: str, vw: int, vl: int, tw: int, tl: int = 4) -> ModelConfig:
    return _vit(name, vw, vl, tw, tw // 16, 128, image=32, patch=4, head_width=16, ctx=32, tl=tl)


# CPU family with the paper's structure: 32×32 images, patch 4 (65 tokens), head dim 16, context 32.
register_family("tiny", [
    _tiny("tiny/ViT-N", 32, 2, 32),
    _tiny("tiny/ViT-T", 32, 4, 32),
    _tiny("tiny/ViT-C", 48, 4, 48),
    _tiny("tiny/ViT-S", 64, 4, 64),
    _tiny("tiny/ViT-M", 96, 4, 80),
    _tiny("tiny/ViT-B", 128, 4, 96),
    _tiny("tiny/ViT-BL", 192, 4, 128),
    _tiny("tiny/ViT-L", 256, 6, 128),
])

# Test family: trains in seconds (16×16 images, patch 4, 2 blocks, context 16).
register_family("test", [
    _vit("test/A", 16, 1, 16, 2, 16, image=16, patch=4, head_width=8, ctx=16, tl=1),
    _vit("test/B", 24, 2, 16, 2, 16, image=16, patch=4, head_width=8, ctx=16, tl=2),
    _vit("test/C", 32, 2, 24, 3, 24, image=16, patch=4, head_width=8, ctx=16, tl=2),
])

# Swin test member for CPU tests (32×32, patch 2, window 4).
register_family("test-swin", [
    _swin("test/Swin-A", 16, (1, 1), 16, 2, embed=16, image=32, patch=2, window=4, ctx=16, tl=1, head_width=8),
    _swin("test/Swin-B", 16, (2, 2), 24, 3, embed=16, image=32, patch=2, window=4, ctx=16, tl=1, head_width=8),
])


@functools.cache
def _open_clip_configs() -> dict[str, ModelConfig]:
    """Upstream open_clip configs that have a plain ViT (or timm Swin) tower and the standard text tower."""
    import open_clip

    out = {}
    for name in open_clip.list_models():
        cfg = _from_open_clip_cfg(name, open_clip.get_model_config(name))
        if cfg is not None:
            out[name] = cfg
    return out


_STANDARD_VISION = {"image_size", "layers", "width", "head_width", "mlp_ratio", "patch_size"}
_STANDARD_TEXT = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio"}


def _from_open_clip_cfg(name: str, cfg: dict[str, Any] | None) -> ModelConfig | None:
    """Convert an open_clip model_cfg to a ModelConfig, or None when it is not a plain ViT CLIP."""
    if not cfg or cfg.get("quick_gelu") or "custom_text" in cfg:
        return None
    v, t = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    if not set(v) <= _STANDARD_VISION or not set(t) <= _STANDARD_TEXT or not isinstance(v.get("layers", 12), int):
        return None
    img = v.get("image_size", 224)
    if not isinstance(img, int):
        return None
    vision = VisionConfig(**{k: v[k] for k in _STANDARD_VISION if k in v})
    text = TextConfig(**{k: t[k] for k in _STANDARD_TEXT if k in t})
    return ModelConfig(name=name, embed_dim=cfg["embed_dim"], vision=vision, text=text, family="open_clip")


def list_families() -> dict[str, tuple[str, ...]]:
    return dict(_FAMILIES)


def family_members(family: str) -> tuple[str, ...]:
    if family not in _FAMILIES:
        raise unknown_name("family", family, _FAMILIES)
    return _FAMILIES[family]


def list_models(family: str | None = None, *, upstream: bool = True) -> list[str]:
    """Registered names (compt's families first, then, with `upstream`, open_clip's ViT configs: listing those
    imports open_clip)."""
    if family is not None:
        if family == "open_clip":
            return list(_open_clip_configs())
        return list(family_members(family))
    return list(_MODELS) + (list(_open_clip_configs()) if upstream else [])


def get_model_config(name: str) -> ModelConfig:
    """Resolve a model name to its config; unknown names get a suggestion of close names."""
    if name in _MODELS:
        return _MODELS[name]
    upstream = _open_clip_configs()
    if name in upstream:
        return upstream[name]
    raise unknown_name("model", name, list(_MODELS) + list(upstream))


# ----------------------------------------------------------------------------------------------- factory
def build_model(cfg: ModelConfig) -> torch.nn.Module:
    """Build a freshly initialised open_clip CLIP for `cfg` (fp32, on CPU)."""
    from open_clip.model import CLIP

    if cfg.vision.swin is not None:
        ensure_registered(cfg.vision.swin, image_size=cfg.vision.image_size, mlp_ratio=cfg.vision.mlp_ratio)
    oc = cfg.to_open_clip()
    return CLIP(embed_dim=oc["embed_dim"], vision_cfg=oc["vision_cfg"], text_cfg=oc["text_cfg"],
                init_logit_bias=cfg.init_logit_bias)


def create_model(name_or_cfg: str | ModelConfig, *, state_dict: dict[str, torch.Tensor] | None = None,
                 ) -> torch.nn.Module:
    """Resolve → build → optionally load weights (strict)."""
    from compt.checkpoint import load_strict

    cfg = get_model_config(name_or_cfg) if isinstance(name_or_cfg, str) else name_or_cfg
    return load_strict(build_model(cfg), state_dict, cfg.name)


def write_open_clip_config(cfg: ModelConfig, directory: str | Path) -> Path:
    """Write `open_clip_config.json` so `open_clip.create_model('local-dir:DIR')` can build this model."""
    path = Path(directory) / "open_clip_config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"model_cfg": cfg.to_open_clip(), "preprocess_cfg": {}}, indent=2))
    return path


ClipConfig = ModelConfig   # the paradigm's config under its own name, as `compt.lm.models.LMConfig`
