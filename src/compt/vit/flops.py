"""Analytic cost of a timm ViT classifier: parameters and forward FLOPs of one image (2 FLOPs per multiply-add).

With d the width, L the depth, h = int(d · mlp_ratio) the MLP width, N = (img / patch)² patches, T = N + 1
tokens, C input channels, K classes:

    params   = (C p² d + d) + d + T d                     patch embedding, class token, position embedding
             + L (4 d² + 4 d  +  2 d h + h + d  +  4 d)   attention (qkv, proj), MLP (fc1, fc2), two LayerNorms
             + 2 d + (d K + K)                            final LayerNorm, head
    forward  = 2 N C p² d                                 patch embedding
             + L (2 T (4 d² + 2 d h) + 4 T² d)            matmuls of the blocks; QKᵀ and AV
             + 2 d K                                      head (class token only)
"""

from __future__ import annotations

from compt.vit.models import ViTConfig


def vit_params(cfg: ViTConfig) -> int:
    d, h, t, k = cfg.width, cfg.hidden, cfg.tokens, cfg.num_classes
    stem = cfg.in_chans * cfg.patch_size**2 * d + d + d + t * d
    block = 4 * d * d + 4 * d + 2 * d * h + h + d + 4 * d
    return stem + cfg.depth * block + 2 * d + d * k + k


def vit_forward_flops(cfg: ViTConfig) -> float:
    d, h, t, k = cfg.width, cfg.hidden, cfg.tokens, cfg.num_classes
    stem = 2 * (t - 1) * cfg.in_chans * cfg.patch_size**2 * d
    block = 2 * t * (4 * d * d + 2 * d * h) + 4 * t * t * d
    return float(stem + cfg.depth * block + 2 * d * k)
