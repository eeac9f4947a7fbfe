"""Options that move a grown member's initial weights away from its parent's solution.

**Shrink and perturb** a grown member's initial weights (Ash & Adams, "On Warm-Starting Neural Network
Training", NeurIPS 2020): a warm-started model generalises worse than a fresh one, and shrinking the weights
toward zero while adding a little fresh-init noise closes the gap. On a grown CoM-PT member it trades the
exact start (function preservation) for a start away from the parent's solution::

    θ ← λ · θ_grown + σ · θ_fresh        for every tensor with at least one dimension

λ = `shrink` (1: unchanged), σ = `perturb` (0: no noise), θ_fresh a fresh initialisation of the child drawn
from its own seeded generator (the stage's seed + `FRESH_SEED_OFFSET`, so it differs from the fresh parts the
growth operator drew). 0-d tensors (CLIP's learnable temperature) keep their grown value. λ = 1, σ = 0 is the
growth operator's state, bit for bit.

**Noise at a set SNR** (`snr_noise`; HyperCloning, Samragh et al. 2024, arXiv 2409.12903, breaks the symmetry
of cloned weights with noise at about 10 dB SNR). Every floating tensor W with at least two dimensions (weight
matrices, embeddings and positional tables, the patch convolution; not norm gains, biases or 0-d scalars)
gets independent Gaussian noise::

    W ← W + ε,   ε ~ N(0, σ² I),   σ² = mean(W²) / 10^(snr_db / 10)

so that 10·log10(mean(W²) / mean(ε²)) ≈ snr_db. An all-zero tensor gets none. The noise is drawn per tensor in
the state dict's order from one generator seeded by `noise_seed` (the train seed and the member's index), so
a grown init is reproducible (and `init.pt` is written once, so a resume reads the same one). Tensors that share
storage (a tied embedding and head) get the same noise and stay shared. Unlike HyperCloning's noisy cloning,
the noise is not arranged to cancel: it is **not function-preserving**.

The grown member's init is `compt.chain.escape_parent`'s: growth, then this noise, then partial inheritance
(`compt.inherit`: what it replaces by the fresh init loses its noise, so only inherited tensors carry noise),
then shrink and perturb on every tensor.
"""

from __future__ import annotations

import math

import torch

Tensor = torch.Tensor

FRESH_SEED_OFFSET = 104_729   # the fresh init of the perturbation is not the growth operator's
NOISE_SEED_OFFSET = 7_919     # nor is the SNR noise's stream any of theirs


def noise_seed(seed: int, member: int) -> int:
    """The SNR noise's seed of chain member `member` (0-based) in a run of train seed `seed`."""
    return NOISE_SEED_OFFSET + 1_000_003 * seed + member


def shrink_perturb(grown: dict[str, Tensor], fresh: dict[str, Tensor], *, shrink: float,
                   perturb: float) -> dict[str, Tensor]:
    """λ · grown + σ · fresh per tensor (module docstring); both state dicts must have the same keys and shapes."""
    if grown.keys() != fresh.keys():
        raise ValueError(f"grown and fresh states differ in keys: {sorted(set(grown) ^ set(fresh))[:4]}")
    if shrink == 1.0 and perturb == 0.0:
        return grown
    out = {}
    for key, value in grown.items():
        assert value.shape == fresh[key].shape, (key, value.shape, fresh[key].shape)
        if value.ndim == 0 or not value.is_floating_point():
            out[key] = value
        else:
            out[key] = shrink * value + perturb * fresh[key].to(value.dtype)
    return out


def snr_noise(state: dict[str, Tensor], snr_db: float, generator: torch.Generator) -> dict[str, Tensor]:
    """`state` plus Gaussian noise at `snr_db` dB on every floating tensor of ≥ 2 dims (module docstring)."""
    out, shared = {}, {}
    for key, value in state.items():
        if value.ndim < 2 or not value.is_floating_point():
            out[key] = value
            continue
        where = (value.data_ptr(), tuple(value.shape), value.stride())
        if where not in shared:
            power = float(value.double().pow(2).mean())
            sigma = math.sqrt(power / 10 ** (snr_db / 10))
            noise = torch.randn(value.shape, generator=generator, dtype=torch.float64) * sigma
            shared[where] = (value.double() + noise).to(value.dtype)
        out[key] = shared[where]
    return out
