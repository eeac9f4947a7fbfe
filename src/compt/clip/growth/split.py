"""`split`: exact growth whose new heads and hidden units start as unequal splits of the parent's (LEMON-style).

LEMON (Wang et al., "LEMON: Lossless Model Expansion", ICLR 2024) grows a transformer losslessly by
*replicating* neurons and splitting their outgoing weights unequally, so the copies are useful from the first
step and the split, not noise, breaks their symmetry. `split` keeps everything of `preserve` that concerns the
residual stream (the LN-compatible stream map E, the LayerNorm rewrites, the embeddings, the final heads and
`preserve`'s cancelling noise on the parent's reads; `compt.clip.growth.preserve`) and changes how new capacity
starts. For one block, with H parent heads (or hidden units) and H' child ones:

- new head n (child slot H … H'−1) copies parent head s = (n − H) mod H: its q, k and v rows and biases are
  head s's, plus `noise` × cancelling null noise (`width.null_noise`: directions no child LayerNorm output
  has, so the copy reads differently but computes the same h_s at step 0). Both then share head s's output
  projection unequally::

      O'[:, s] = α O[:, s],   O'[:, n] = (1 − α) O[:, s],     α = ½ ± U(0.1, 0.3)   (random sign, per copy)

  so O'[:, s] h_s + O'[:, n] h_s = O[:, s] h_s: exact. A head copied k times (H' > 2H) is split k times in
  turn, each split keeping the sum.
- new hidden units: the same per unit (c_fc row and bias copied, c_proj column split).
- inserted blocks (depth growth) start from fresh weights with heads and hidden units in cancelling pairs:
  unit 2i+1 copies unit 2i's reads (plus null noise) and writes −O[:, 2i], so the block adds exactly 0 at
  step 0 (an odd last unit, and the output biases, write 0) — where `preserve` zeroes the output projections.

Why it escapes differently: under `preserve` new units start silent (zero output columns), so their reads get no
gradient at step 0 and they start from nothing; under `split` every new unit carries part of its parent unit's
signal. Their reads' gradients are in ratio α : (1 − α); Adam is blind to a constant ratio, but the two output
columns get equal gradients, so after one step they are no longer proportional and the reads' gradients differ
in direction from then on (the null noise makes them differ from the start).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compt.clip.growth.preserve import Tower, widen
from compt.clip.growth.width import StreamMap, null_noise
from compt.clip.models import ModelConfig
from compt.growth import StateDict, identity_depth, put

Tensor = torch.Tensor
SPLIT_OFFSET = (0.1, 0.3)    # |α − ½| ~ U(0.1, 0.3): every split clearly unequal, no copy nearly silent


def split(parent_state: StateDict, parent_cfg: ModelConfig, child_cfg: ModelConfig, *,
          generator: torch.Generator, fresh: StateDict | None = None, noise: float = 1.0) -> StateDict:
    """Exact growth with replicated, unequally split heads and units (module docstring)."""
    return widen(parent_state, parent_cfg, child_cfg, generator, fresh, noise, identity_depth, "split",
                 SplitUnits(generator))


@dataclass(frozen=True)
class Units:
    """A block's heads or hidden units: unit u reads rows u·size … (u+1)·size of each of `blocks` row blocks
    (stride `stride`) of `read` through LayerNorm `ln`, and writes the same columns of `write`."""

    ln: str
    read: str          # weight key
    read_bias: str
    write: str
    size: int          # head dim, or 1 for MLP units
    blocks: int = 1    # 3 for the fused [q; k; v] in_proj
    stride: int = 0    # rows per block (the child width) when blocks > 1

    def cols(self, u: Tensor) -> Tensor:
        return (u[:, None] * self.size + torch.arange(self.size)).flatten()

    def rows(self, u: Tensor) -> Tensor:
        return torch.cat([self.cols(u) + k * self.stride for k in range(self.blocks)])


def block_units(ct: Tower) -> tuple[tuple[Units, int], tuple[Units, int]]:
    """(attention heads, their count) and (MLP hidden units, their count) of a child block."""
    heads = Units("ln_1", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", ct.head_width, 3,
                  ct.width)
    units = Units("ln_2", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", 1)
    return (heads, ct.heads), (units, ct.hidden)


@dataclass(frozen=True)
class SplitUnits:
    """`split`'s rule for new and inserted units (`compt.clip.growth.preserve.UnitRule`)."""

    generator: torch.Generator

    def fractions(self, n: int) -> Tensor:
        """n split fractions α = ½ ± U(SPLIT_OFFSET), float64."""
        lo, hi = SPLIT_OFFSET
        size = lo + (hi - lo) * torch.rand(n, generator=self.generator, dtype=torch.float64)
        sign = torch.randint(0, 2, (n,), generator=self.generator) * 2 - 1
        return 0.5 + sign * size

    def grown(self, c: StateDict, d: str, pt: Tower, ct: Tower, e: StreamMap, noise: float) -> None:
        for (units, n_child), n_parent in zip(block_units(ct), (pt.heads, pt.hidden), strict=True):
            new = torch.arange(n_parent, n_child)
            for start in range(0, new.numel(), n_parent):       # one round: every source at most once
                dst = new[start:start + n_parent]
                src = (dst - n_parent) % n_parent
                copy_reads(c, d, units, src, dst, e, noise)
                alpha = self.fractions(dst.numel()).repeat_interleave(units.size)
                out, cs, cn = c[d + units.write], units.cols(src), units.cols(dst)
                shared = out[:, cs].double()
                put(c, d + units.write, shared * (1 - alpha), (slice(None), cn))
                put(c, d + units.write, shared * alpha, (slice(None), cs))

    def inserted(self, c: StateDict, d: str, ct: Tower, e: StreamMap, noise: float) -> None:
        for units, n in block_units(ct):
            even = torch.arange(0, n - 1, 2)
            copy_reads(c, d, units, even, even + 1, e, noise)
            out = c[d + units.write]
            put(c, d + units.write, -out[:, units.cols(even)], (slice(None), units.cols(even + 1)))
            if n % 2:
                last = units.cols(torch.tensor([n - 1]))
                put(c, d + units.write, torch.zeros_like(out[:, last]), (slice(None), last))
        for name in ("attn.out_proj.bias", "mlp.c_proj.bias"):
            put(c, d + name, torch.zeros_like(c[d + name]))


def copy_reads(c: StateDict, d: str, units: Units, src: Tensor, dst: Tensor, e: StreamMap, noise: float) -> None:
    """Units `dst` read what units `src` read (weight rows and biases), plus `noise` × null noise drawn from
    the rows `dst` held (fresh), which no child LayerNorm output sees."""
    weight, bias = c[d + units.read], c[d + units.read_bias]
    rows_src, rows_dst = units.rows(src), units.rows(dst)
    rows = weight[rows_src].float()
    if noise:
        rows = rows + noise * null_noise(e, c[d + units.ln + ".weight"], weight[rows_dst])
    put(c, d + units.read, rows, rows_dst)
    put(c, d + units.read_bias, bias[rows_src].clone(), rows_dst)
