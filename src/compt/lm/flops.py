"""Analytic forward and training FLOPs of a decoder-only `LMConfig` (the LM side of `compt.clip.flops`).

Convention as for CLIP (open_clip's profiler): FLOPs = 2 × multiply-accumulates of matmuls, forward only;
attention matmuls are included, element-wise work (RMSNorm, SiLU, softmax, RoPE) and the embedding lookup
are not. A *sample* is one sequence of T = context_length tokens. Per layer, with hidden d, H query heads and
K KV heads of dim h, SwiGLU width I::

    MACs/token = d·H·h + 2·d·K·h + H·h·d      # q, k;v, o projections
               + 3·d·I                        # gate, up, down
               + 2·T·H·h                      # q·kᵀ and attn·v (a causal mask still computes T×T)

plus d·V for the LM head. Matmul parameters N_mm = L·(2·d·H·h + 2·d·K·h + 3·d·I) + d·V, so the forward is
2·N_mm·T + 4·L·T²·H·h per sequence and training (forward + backward ≈ 3 × forward) on D tokens costs

    C = 6·N_mm·D + 12·L·T·H·h·D               (the usual 6·N·D plus attention)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from compt.lm.models import LMConfig


@dataclass(frozen=True)
class LMFlops:
    """Forward FLOPs of one sequence of `tokens` tokens and parameter counts."""

    forward: float          # per sequence
    tokens: int
    params: int             # all parameters (tied embedding counted once)
    params_matmul: int      # N_mm: parameters that multiply activations (embedding lookup excluded)

    @property
    def total(self) -> float:
        return self.forward

    def per_sample(self, captions: int = 1) -> float:
        """Forward FLOPs of one sample (a sequence); `captions` exists for the CLIP cost model's signature."""
        return self.forward

    def train_flops(self, tokens: float) -> float:
        """C = 3 × forward per token × D tokens (= 6·N_mm·D + 12·L·T·H·h·D)."""
        return 3.0 * self.forward / self.tokens * tokens


def layer_params(cfg: LMConfig) -> int:
    """Matmul weights of one decoder layer (no biases) — the RMSNorm gains are added separately."""
    d, hh, kh = cfg.hidden, cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    return 2 * d * hh + 2 * d * kh + 3 * d * cfg.intermediate


@functools.cache
def lm_flops(cfg: LMConfig) -> LMFlops:
    """Analytic forward FLOPs of one sequence (2 × MACs) and parameter counts of `cfg`."""
    t, d = cfg.context_length, cfg.hidden
    n_mm = cfg.layers * layer_params(cfg) + d * cfg.vocab_size
    attention = 2 * t * t * cfg.heads * cfg.head_dim * cfg.layers
    embed = 0 if cfg.tie_embeddings else d * cfg.vocab_size
    params = n_mm + embed + (2 * cfg.layers + 1) * d
    return LMFlops(forward=2.0 * (n_mm * t + attention), tokens=t, params=params, params_matmul=n_mm)


def counted_lm_flops(cfg: LMConfig, tokens: int | None = None) -> float:
    """Forward FLOPs of one sequence measured with torch's FlopCounterMode (math SDPA backend forced)."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from compt.lm.models import build_lm

    model = build_lm(cfg).train()
    ids = torch.zeros(1, tokens or cfg.context_length, dtype=torch.long)
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), torch.enable_grad(), counter:
        model(input_ids=ids)
    return float(counter.get_total_flops())
