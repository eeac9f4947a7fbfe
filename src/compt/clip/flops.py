"""Analytic per-sample forward FLOPs and parameter counts of a `ModelConfig`.

Convention (open_clip's profiler): FLOPs = 2 × multiply-accumulates of matmuls and convolutions, forward
only, batch 1, at the model's own image size and context length; attention matmuls are included, element-
wise work (LayerNorm, GELU, softmax) is not. For a transformer block of width w, MLP ratio r on T tokens::

    MACs = T·(3w² + w² + 2·r·w²)   # q;k;v in-projection, out-projection, MLP
         + 2·T²·w                  # q·kᵀ and attn·v over all heads (causal masks still compute T×T)

ViT image tower: patch conv P·(3p²)·w for P = (image/p)² patches, L blocks on T = P + 1 tokens (T = P' + 1
with training-time patch dropout keeping P' = max(1, ⌊P·(1 − p)⌋) patches), and the class-token projection
w·E. Text tower: L blocks on T = context tokens and the EOT projection w·E (the
token embedding is a lookup). Swin: patch conv, per stage s with C_s = C·2^s on N_s tokens and window
M_s = min(window, side_s): N_s·(4 + 2r)·C_s² + 2·N_s·M_s²·C_s per block, patch merging N_s·(4C_{s-1})·(2C_{s-1})
and the pooled projection C_last·E.

Parameters are counted analytically too (`param_counts`; tested against built models), so that FLOPs and
parameter tables (`compt models`, `compt plan`) need no torch.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

from compt.clip.models import ModelConfig, SwinConfig, VisionConfig


@dataclass(frozen=True)
class ModelFlops:
    """Forward FLOPs of one sample (one image, one caption) and parameter counts."""

    image: float
    text: float
    params_image: int
    params_text: int

    @property
    def total(self) -> float:
        return self.image + self.text

    def per_sample(self, captions: int = 1) -> float:
        """Forward FLOPs of one image with `captions` captions (each caption runs the text tower)."""
        return self.image + captions * self.text

    @property
    def params(self) -> int:
        return self.params_image + self.params_text


def block_macs(tokens: int, width: int, mlp_ratio: float) -> float:
    """MACs of one pre-LN transformer block (attention matmuls included)."""
    return tokens * (4 + 2 * mlp_ratio) * width**2 + 2 * tokens**2 * width


def vit_image_macs(v: VisionConfig, embed_dim: int) -> float:
    """The patch conv sees every patch; with patch dropout the blocks see only the kept patches + class token."""
    patches = (v.image_size // v.patch_size) ** 2
    conv = patches * 3 * v.patch_size**2 * v.width
    return conv + v.layers * block_macs(v.kept_patches + 1, v.width, v.mlp_ratio) + v.width * embed_dim


def swin_image_macs(v: VisionConfig, s: SwinConfig, embed_dim: int) -> float:
    side = v.image_size // s.patch_size
    macs = side**2 * 3 * s.patch_size**2 * s.embed_dim
    for stage, depth in enumerate(s.depths):
        c = s.embed_dim * 2**stage
        if stage > 0:
            side //= 2
            macs += side**2 * (4 * c // 2) * c  # patch merging: LayerNorm(4C) then Linear(4C → 2C)
        n, window = side**2, min(s.window_size, side)
        macs += depth * (n * (4 + 2 * v.mlp_ratio) * c**2 + 2 * n * window**2 * c)
    return macs + s.embed_dim * 2 ** (len(s.depths) - 1) * embed_dim


@functools.cache
def model_flops(cfg: ModelConfig) -> ModelFlops:
    """Analytic forward FLOPs (2 × MACs, batch 1) and parameter counts of `cfg`."""
    v, t = cfg.vision, cfg.text
    image = swin_image_macs(v, v.swin, cfg.embed_dim) if v.swin else vit_image_macs(v, cfg.embed_dim)
    text = t.layers * block_macs(t.context_length, t.width, t.mlp_ratio) + t.width * cfg.embed_dim
    p_image, p_text = param_counts(cfg)
    return ModelFlops(image=2.0 * image, text=2.0 * text, params_image=p_image, params_text=p_text)


def equal_flops_epochs(cfg: ModelConfig, epochs: float, drop: float, captions: int = 1) -> float:
    """Epochs of a member that drops a fraction `drop` of its image patches (FLIP) at the student cost of `epochs`
    without dropping::

        epochs' = epochs · F(cfg) / F(cfg with patch_dropout = drop)     (F: forward FLOPs per sample, K captions)

    The teacher's cost is left out: with a teacher cache it is paid once per sample whatever the epochs."""
    dropped = replace(cfg, vision=replace(cfg.vision, patch_dropout=drop))
    return epochs * model_flops(cfg).per_sample(captions) / model_flops(dropped).per_sample(captions)


def block_params(width: int, mlp_ratio: float) -> int:
    """Parameters of one block: q;k;v + out projections, MLP, two LayerNorms (weights and biases)."""
    hidden = int(width * mlp_ratio)
    return 4 * width * width + 4 * width + 2 * width * hidden + hidden + width + 4 * width


def swin_params(v: VisionConfig, s: SwinConfig, embed_dim: int) -> int:
    """timm's Swin trunk + open_clip's bias-free projection: patch conv and LayerNorm; per stage s (width C_s,
    window M_s = min(window, side_s)) patch merging LayerNorm(4C_{s-1}) + Linear(4C_{s-1} → C_s) and blocks with
    a (2M_s − 1)² × heads_s relative-position bias table; the final LayerNorm and C_last·E."""
    side = v.image_size // s.patch_size
    params = 3 * s.patch_size**2 * s.embed_dim + 3 * s.embed_dim
    for stage, depth in enumerate(s.depths):
        c = s.embed_dim * 2**stage
        if stage > 0:
            side //= 2
            params += 2 * (2 * c) + (2 * c) * c
        table = (2 * min(s.window_size, side) - 1) ** 2 * s.num_heads[stage]
        params += depth * (block_params(c, v.mlp_ratio) + table)
    last = s.embed_dim * 2 ** (len(s.depths) - 1)
    return params + 2 * last + last * embed_dim


def param_counts(cfg: ModelConfig) -> tuple[int, int]:
    """(image tower, text side incl. logit scale) parameter counts, analytic for ViT and Swin towers."""
    v, t, e = cfg.vision, cfg.text, cfg.embed_dim
    text = (t.vocab_size + t.context_length) * t.width + t.layers * block_params(t.width, t.mlp_ratio) \
        + 2 * t.width + t.width * e + 1 + (cfg.init_logit_bias is not None)
    if v.swin is not None:
        return swin_params(v, v.swin, e), text
    image = 3 * v.patch_size**2 * v.width + (v.num_tokens + 1) * v.width + 4 * v.width \
        + v.layers * block_params(v.width, v.mlp_ratio) + v.width * e
    return image, text


def counted_flops(cfg: ModelConfig) -> tuple[float, float]:
    """(image, text) forward FLOPs measured with torch's FlopCounterMode, batch 1.

    Forces the math SDPA backend and grad mode, because on CPU the counter misses the fused attention
    kernels and nn.MultiheadAttention's no-grad fast path.
    """
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from compt.clip.models import build_model

    model = build_model(cfg).train()
    image = torch.zeros(1, 3, cfg.vision.image_size, cfg.vision.image_size)
    text = torch.zeros(1, cfg.text.context_length, dtype=torch.long)
    out = []
    with sdpa_kernel(SDPBackend.MATH), torch.enable_grad():
        for fn, x in ((model.encode_image, image), (model.encode_text, text)):
            counter = FlopCounterMode(display=False)
            with counter:
                fn(x)
            out.append(float(counter.get_total_flops()))
    return out[0], out[1]
