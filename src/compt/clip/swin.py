"""Swin vision trunks, registered in timm so open_clip's `TimmModel` can build them by name.

open_clip's timm adapter passes only a model name to `timm.create_model`, so each Swin shape compt uses
(including ones timm does not ship, such as the paper's nano C64 member and CPU test sizes) is registered
as a timm entry point named by `SwinConfig.timm_name`, with stochastic depth off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True, kw_only=True)
class SwinConfig:
    """A timm Swin trunk: stage widths C·2^i, window attention with `window_size`, patch merging."""

    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    patch_size: int = 4
    window_size: int = 7

    @property
    def timm_name(self) -> str:
        """The name this trunk is registered under in timm (see `ensure_registered`)."""
        d = "-".join(str(x) for x in self.depths)
        return f"compt_swin_c{self.embed_dim}_d{d.replace('-', '_')}_p{self.patch_size}_w{self.window_size}"



def ensure_registered(s: SwinConfig, *, image_size: int, mlp_ratio: float) -> str:
    """Register the timm entry point for `s` at `image_size` (idempotent) and return its name."""
    import timm
    from timm.models import register_model
    from timm.models.swin_transformer import SwinTransformer

    name = s.timm_name
    if timm.is_model(name):
        return name

    def entry(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        args = dict(img_size=image_size, patch_size=s.patch_size, embed_dim=s.embed_dim,
                    depths=s.depths, num_heads=s.num_heads, window_size=s.window_size,
                    mlp_ratio=mlp_ratio, drop_path_rate=0.0)
        # timm's factory also passes pretrained_cfg / cache_dir bookkeeping the class does not take
        extra = {k: v for k, v in kwargs.items() if not k.startswith(("pretrained_cfg", "cache_dir"))}
        model = SwinTransformer(**{**args, **extra})
        model.pretrained_cfg = model.default_cfg = {"pool_size": None, "num_classes": 0}  # read by open_clip
        return model

    entry.__name__ = name
    entry.__qualname__ = name
    register_model(entry)
    return name
