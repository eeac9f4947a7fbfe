"""timm Vision Transformer classifiers: `ViTConfig`, the one registry of named sizes, the factory and export.

Every member is ``timm.create_model(TIMM_ARCH, pretrained=False, **cfg.timm_args())``: timm's own
`VisionTransformer` (class token, learned position embedding, pre-LN blocks, final LayerNorm, linear head on the
class token). Families: ``vit-test`` (seconds on a CPU, for tests), ``vit-tiny`` (a CPU study at 28×28) and
``deit`` (DeiT-Ti → S → B at 224, for planning and the cluster).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compt.errors import UserError, unknown_name

if TYPE_CHECKING:
    import torch

TIMM_ARCH = "vit_base_patch16_224"   # the timm entry point every member is built from (its sizes overridden)


@dataclass(frozen=True, kw_only=True)
class ViTConfig:
    """One ViT classifier: image side, patch side, width d, depth L, heads, MLP ratio, input channels, classes."""

    name: str
    family: str
    img_size: int
    patch_size: int
    width: int
    depth: int
    heads: int
    mlp_ratio: float = 4.0
    in_chans: int = 3
    num_classes: int = 10

    def __post_init__(self) -> None:
        if self.width % self.heads or self.img_size % self.patch_size:
            raise UserError(f"{self.name}: width {self.width} must be a multiple of heads {self.heads} and "
                            f"img_size {self.img_size} of patch_size {self.patch_size}")

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def hidden(self) -> int:
        """MLP hidden units (timm: int(d · mlp_ratio))."""
        return int(self.width * self.mlp_ratio)

    @property
    def tokens(self) -> int:
        """Patches plus the class token."""
        return (self.img_size // self.patch_size) ** 2 + 1

    def timm_args(self) -> dict[str, Any]:
        """The keyword arguments of `timm.create_model` that give this model."""
        return {"img_size": self.img_size, "patch_size": self.patch_size, "embed_dim": self.width,
                "depth": self.depth, "num_heads": self.heads, "mlp_ratio": self.mlp_ratio,
                "in_chans": self.in_chans, "num_classes": self.num_classes}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ViTConfig:
        known = {f.name for f in fields(cls)}
        if set(raw) - known:
            raise UserError(f"unknown ViT config keys {sorted(set(raw) - known)}")
        return cls(**raw)


_REGISTRY: dict[str, ViTConfig] = {}
_FAMILIES: dict[str, tuple[str, ...]] = {}


def register_vit_family(name: str, members: list[ViTConfig]) -> None:
    """Add a family (members in ascending size) to the one registry."""
    for m in members:
        _REGISTRY[m.name] = m
    _FAMILIES[name] = tuple(m.name for m in members)


def _sizes(family: str, img: int, patch: int, classes: int, rows: list[tuple[str, int, int, int]]) -> None:
    register_vit_family(family, [ViTConfig(name=f"{family}/{n}", family=family, img_size=img, patch_size=patch,
                                           width=w, depth=d, heads=h, num_classes=classes) for n, w, d, h in rows])


_sizes("vit-test", 16, 4, 10, [("A", 16, 1, 2), ("B", 32, 2, 4), ("C", 32, 3, 4)])
# the CPU study (benchmarks/experiments.py vit_parity): head dim 16 throughout, 39x in FLOPs from XS to L
_sizes("vit-tiny", 28, 4, 10, [("XS", 32, 2, 2), ("S", 64, 3, 4), ("M", 96, 4, 6), ("L", 128, 6, 8)])
_sizes("deit", 224, 16, 1000, [("Ti", 192, 12, 3), ("S", 384, 12, 6), ("B", 768, 12, 12)])


def vit_families() -> dict[str, tuple[str, ...]]:
    return dict(_FAMILIES)


def list_vit_models(family: str | None = None) -> list[str]:
    if family is None:
        return list(_REGISTRY)
    return list(_FAMILIES.get(family, ()))


def get_vit_config(name: str) -> ViTConfig:
    if name not in _REGISTRY:
        raise unknown_name("ViT model", name, _REGISTRY)
    return _REGISTRY[name]


def build_vit(cfg: ViTConfig) -> torch.nn.Module:
    """A freshly initialised timm ViT of `cfg` (the caller seeds the RNG)."""
    import timm

    return timm.create_model(TIMM_ARCH, pretrained=False, **cfg.timm_args())


# ----------------------------------------------------------------------------------------------- export
def export_timm(cfg: ViTConfig, state_dict: dict[str, torch.Tensor], out: Path) -> None:
    """A folder timm loads: ``model.safetensors`` (the state dict) and ``config.json`` (architecture, model
    arguments): ``timm.create_model(c["architecture"], checkpoint_path=FOLDER/model.safetensors,
    **c["model_args"])``."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, out / "model.safetensors")
    meta = {"architecture": TIMM_ARCH, "num_classes": cfg.num_classes, "model_args": cfg.timm_args(),
            "compt_model": cfg.name}
    (out / "config.json").write_text(json.dumps(meta, indent=2) + "\n")


def load_exported(folder: Path) -> torch.nn.Module:
    """The model of an `export_timm` folder, through timm's public factory."""
    import timm

    meta = json.loads((folder / "config.json").read_text())
    return timm.create_model(meta["architecture"], pretrained=False,
                             checkpoint_path=str(folder / "model.safetensors"), **meta["model_args"])
