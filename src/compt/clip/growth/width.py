"""Exact width growth of a pre-LN residual stream: the linear algebra behind the `preserve` operator.

Notation (per token): parent stream s ∈ R^w, child stream s' ∈ R^w', r = w'/w, m = w' − w, 1 = all-ones,
P = I − 11ᵀ/w (centring). A LayerNorm is LN(x) = γ ⊙ n(x) + β with n(x) = P x / sqrt(var(x) + eps).

**LN-compatible stream maps.** The child stream is kept equal to E s for a fixed E ∈ R^{w'×w}. Every read of
the stream goes through a LayerNorm, so E must satisfy mean(E x) = mean(x) and var(E x) = var(x) for all x
(then n(E x) = E n(x) exactly, eps included). That holds iff

    E 1 = 1   and   Eᵀ E = r I          (E = √r · an isometry that maps 1/√w to 1/√w').

A per-token constant added to the stream is invisible to every LayerNorm, so E only matters modulo 1.
`mean_pad_map` is the simplest such E for any w' ≥ w (integer ratio or not):

    E₀ x = [ μ + √r (x − μ) ;  μ 1_m ],    μ = mean(x)

i.e. the parent channels stay in place with their deviations from the mean scaled by √r, and the m new
channels hold the mean. Check: the mean is μ; the variance is r‖x − μ‖²/w' = ‖x − μ‖²/w. (Zero new channels
would not work — they shift the mean; plain duplication only works for integer r.)

**Reads and writes.** A linear layer W reading LN(s) becomes W' = W diag(γ) Eᵀ diag(1/γ') / r reading the
child LN (γ' = γ carried through E, β' = γ' ⊙ E(β/γ)): then W' (γ' ⊙ E n + β') = W (γ ⊙ n + β) exactly,
because EᵀE/r = I. A layer writing Δ into the stream becomes E Δ (E W, E b).

**The embedding LayerNorm (ViT `ln_pre`).** Its *output* is the stream, so it must produce E s exactly:
γ' ⊙ F n + β' ≡ E(γ ⊙ n + β) (mod 1), where the child's patch embedding feeds F x into ln_pre and F must be
LN-compatible on 1^⊥ (F 1 = 0, ‖F v‖² = r‖v‖²) so that the child normalises to n' = F n. For constant γ the
pair (E₀, F = √r [P; 0]) works. For a trained, non-constant γ, E has to be found: with Q an orthonormal
basis of 1^⊥ and coordinates a = Qᵀ n, the parent's centred ln_pre output has Gram form
G = QᵀD P D Q (D = diag γ) and the child's, with gains γ' = [γ; g 1_m] and top part F_top = √r Q X Qᵀ,
has form Xᵀ K X + g² yyᵀ with K = G + ε ppᵀ, p = Qᵀγ, ε = 1/w − 1/w' (the child averages over w' channels,
which adds ε (γᵀn)²). Pick g² = λ_min(G)/2 and shift by g²: G_g = G − g² I, K_g = G_g + ε ppᵀ ≻ 0. Then

    X = K_g^{-1/2} G_g^{1/2},   y = √ε G_g^{-1/2} p / sqrt(1 + ε pᵀ G_g^{-1} p)

gives Xᵀ K_g X = G_g and XᵀX + yyᵀ = I (Sherman–Morrison), hence Xᵀ K X + g² yyᵀ = G: the child's centred
ln_pre output has exactly the parent's Gram form. The leftover unit of norm (direction y) goes to the new
channels along a random zero-sum unit vector v (needs m ≥ 2), so F = √r [Q X Qᵀ; v (Q y)ᵀ] is an exact
isometry onto 1^⊥. Equal Gram forms mean the two centred outputs differ by an isometry; that isometry is
E on 1^⊥: E = L_c G^{-1} L_pᵀ + 11ᵀ/w with L_p = P D Q and L_c = P' diag(γ') F Q. It is exact for every
width ratio; it only needs G ≻ 0 (ln_pre gains not degenerate, e.g. Σ 1/γ_j ≠ 0) and m ≥ 2.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from compt.errors import UserError
from compt.growth import one_thread

Tensor = torch.Tensor
_CHUNK = 8192  # rows per dense matmul chunk (bounds temporaries for the 49408-row token embedding)


@dataclass(frozen=True)
class StreamMap:
    """A fixed LN-compatible map E (w'×w, float64) from the parent's residual stream to the child's.

    When `low_rank` = (A, B) is set, E is applied as E₀ x + A (Bᵀ x) with E₀ = `mean_pad_map`: for the ViT
    the solved E differs from E₀ by a matrix of numerical rank ~10–20 (truncated at 1e-13 relative, far
    below float32), so growth costs O(size · rank) instead of a dense w'×w product per weight.
    """

    matrix: Tensor
    mean_pad: bool = False                           # E is exactly `mean_pad_map`
    low_rank: tuple[Tensor, Tensor] | None = None    # E = E₀ + A Bᵀ, A (w', k), B (w, k)

    @property
    def w(self) -> int:
        return self.matrix.shape[1]

    @property
    def w2(self) -> int:
        return self.matrix.shape[0]

    @property
    def r(self) -> float:
        return self.w2 / self.w

    def embed(self, x: Tensor, dim: int = -1) -> Tensor:
        """E applied along `dim` (size w → w') in x's dtype: rows of a read weight, columns of a write."""
        if dim in (0, -2) and x.dim() == 2:
            return self.embed(x.T.contiguous()).T
        assert dim in (-1, x.dim() - 1)
        if not (self.mean_pad or self.low_rank is not None):
            flat = x.reshape(-1, self.w)
            mat = self.matrix.to(x.dtype).T
            return torch.cat([c @ mat for c in flat.split(_CHUNK)]).reshape(*x.shape[:-1], self.w2)
        s = math.sqrt(self.r)
        mu = x.mean(-1, keepdim=True)
        out = x.new_empty(*x.shape[:-1], self.w2)
        torch.add(x * s, mu, alpha=1 - s, out=out[..., : self.w])
        out[..., self.w:] = mu
        if self.low_rank is not None:
            a, b = (t.to(x.dtype) for t in self.low_rank)
            out += (x @ b) @ a.T
        return out

    def pull(self, y: Tensor) -> Tensor:
        """Eᵀ applied along the last dim (size w' → w): y ↦ y E, in y's dtype."""
        if not (self.mean_pad or self.low_rank is not None):
            return y @ self.matrix.to(y.dtype)
        s = math.sqrt(self.r)
        top = y[..., : self.w]
        shift = ((1 - s) * top.sum(-1, keepdim=True) + y[..., self.w:].sum(-1, keepdim=True)) / self.w
        out = torch.add(top * s, shift)
        if self.low_rank is not None:
            a, b = (t.to(y.dtype) for t in self.low_rank)
            out += (y @ a) @ b.T
        return out

    def check(self) -> None:
        """Assert LN-compatibility: E 1 = 1 and EᵀE = r I (to float64 rounding)."""
        e = self.matrix
        ones = torch.ones(self.w, dtype=e.dtype)
        gram_err = (e.T @ e - self.r * torch.eye(self.w, dtype=e.dtype)).abs().max().item()
        assert (e @ ones - 1).abs().max().item() < 1e-9 and gram_err < 1e-8 * self.r, gram_err


def mean_pad_map(w: int, w2: int) -> StreamMap:
    """E₀ x = [μ + √r (x − μ); μ 1_m]: parent channels in place, new channels hold the mean."""
    s = math.sqrt(w2 / w)
    top = s * torch.eye(w, dtype=torch.float64) + (1 - s) / w
    new = torch.full((w2 - w, w), 1.0 / w, dtype=torch.float64)
    return StreamMap(torch.cat([top, new]), mean_pad=True)


def factored(e: Tensor, rtol: float = 1e-13) -> StreamMap:
    """StreamMap for E, applied as E₀ + A Bᵀ when E − E₀ is numerically low-rank (else densely)."""
    w2, w = e.shape
    with one_thread():
        u, sv, vh = torch.linalg.svd(e - mean_pad_map(w, w2).matrix, full_matrices=False)
    k = int((sv > rtol * max(sv[0].item(), 1.0)).sum())
    if k > min(w, w2) // 4:
        return StreamMap(e)
    return StreamMap(e, low_rank=(u[:, :k] * sv[:k], vh[:k].T))


def helmert_basis(w: int) -> Tensor:
    """Orthonormal basis of 1^⊥ in R^w as the columns of a (w, w−1) float64 matrix (Helmert contrasts)."""
    k = torch.arange(1, w, dtype=torch.float64)             # column j−1: j ones, then −j, then zeros
    q = (torch.arange(w)[:, None] < torch.arange(1, w)[None, :]).to(torch.float64)
    q[torch.arange(1, w), torch.arange(w - 1)] = -k
    return q / torch.sqrt(k * (k + 1))


def _eigh(mat: Tensor) -> tuple[Tensor, Tensor]:
    with one_thread():
        return torch.linalg.eigh(mat)


def _sym_fn(mat: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """fn applied to a symmetric matrix through its eigenvalues."""
    vals, vecs = _eigh(mat)
    return (vecs * fn(vals)) @ vecs.T


@dataclass(frozen=True)
class EmbeddingLN:
    """Result of `grow_embedding_ln`: stream map E, input map F (w'×w) and the child's ln_pre (γ', β')."""

    stream: StreamMap
    input_map: Tensor
    gamma: Tensor
    beta: Tensor


def grow_embedding_ln(gamma: Tensor, beta: Tensor, w2: int, generator: torch.Generator) -> EmbeddingLN:
    """Exact child ln_pre for a stream-producing LayerNorm (see the module docstring for the derivation).

    The child's pre-LN embedding is F x (F 1 = 0, so the child normalises to F n) and its ln_pre output
    equals E (parent ln_pre output) up to a per-token constant.
    """
    g, b = gamma.double(), beta.double()
    w = g.numel()
    if w2 == w:
        eye = torch.eye(w, dtype=torch.float64)
        return EmbeddingLN(StreamMap(eye), eye, g, b)
    if (g - g.mean()).abs().max() <= 1e-12 * g.abs().max():  # constant gains (fresh init): E₀, F = √r [P; 0]
        stream = mean_pad_map(w, w2)
        top = math.sqrt(w2 / w) * (torch.eye(w, dtype=torch.float64) - 1.0 / w)
        f = torch.cat([top, torch.zeros(w2 - w, w, dtype=torch.float64)])
        g2 = torch.cat([g, g.new_full((w2 - w,), g.abs().mean().item() / math.sqrt(2))])
        return EmbeddingLN(stream, f, g2, stream.embed(b))
    if w2 - w < 2:
        raise UserError(f"preserve: vision width {w} -> {w2} adds a single channel; the exact ln_pre construction "
                        "needs at least 2 new channels")
    q = helmert_basis(w)
    lp = g[:, None] * q - (g @ q)[None, :] / w                              # L_p = P D Q      (w, w−1)
    lam, u = _eigh(lp.T @ lp)                                                # G = U diag(λ) Uᵀ
    if lam[0] <= 1e-10 * lam[-1]:
        raise UserError("preserve: the parent's ln_pre gains are degenerate (the centred gain map is singular, "
                        "e.g. several zero gains); cannot build an exact wider ln_pre")
    f, g2 = _embedding_input_map(g, q, lam, u, w2, generator)
    lc = g2[:, None] * (f @ q)
    lc = lc - lc.mean(0, keepdim=True)                                       # L_c = P' D' F Q  (w', w−1)
    e = (lc @ u / lam) @ (u.T @ lp.T) + 1.0 / w                              # L_c G⁻¹ L_pᵀ + 11ᵀ/w
    stream = factored(e)
    stream.check()
    return EmbeddingLN(stream, f, g2, stream.embed(b))


def _embedding_input_map(g: Tensor, q: Tensor, lam: Tensor, u: Tensor, w2: int,
                         generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """F (w'×w) and gains γ' = [γ; g 1_m] with ‖P'(γ' ⊙ F n)‖² = r ‖P(γ ⊙ n)‖² for all n ∈ 1^⊥.

    Works in G's eigenbasis (G = U diag(λ) Uᵀ, Q coordinates): X = K_g^{-1/2} G_g^{1/2}, y as in the module
    docstring, then back through U and Q.
    """
    w = g.numel()
    r, eps = w2 / w, 1.0 / w - 1.0 / w2
    g_sq = lam[0].item() / 2                                                 # new channels' gain², < λ_min
    lam_g = lam - g_sq
    p = u.T @ (q.T @ g)
    k_g = torch.diag(lam_g) + eps * torch.outer(p, p)
    x = _sym_fn(k_g, torch.rsqrt) * lam_g.sqrt()
    u_t = p / lam_g.sqrt()                                                   # G_g^{-1/2} p
    y = math.sqrt(eps) * u_t / math.sqrt(1 + eps * (u_t @ u_t).item())
    v = torch.randn(w2 - w, generator=generator, dtype=torch.float64)
    v = (v - v.mean()) / (v - v.mean()).norm()                               # zero-sum unit vector
    qu = q @ u
    f = math.sqrt(r) * torch.cat([qu @ x @ qu.T, torch.outer(v, qu @ y)])
    return f, torch.cat([g, g.new_full((w2 - w,), math.sqrt(g_sq))])


@dataclass(frozen=True)
class LNRead:
    """A LayerNorm (γ, β) and the linear layer (W, b) that reads it, rewritten for the child stream."""

    gamma: Tensor
    beta: Tensor
    weight: Tensor
    bias: Tensor | None


def carry_gains(stream: StreamMap, gamma: Tensor) -> Tensor:
    """Child LN gains: the E-weighted RMS of the parent gains (= the parent's gain for a kept channel)."""
    e2 = stream.matrix.square()
    out = (e2 @ gamma.double().square() / e2.sum(1)).sqrt()
    return torch.where(out > 1e-6 * out.max(), out, out.max())


def read_through_ln(stream: StreamMap, gamma: Tensor, beta: Tensor, weight: Tensor, bias: Tensor | None) -> LNRead:
    """Rewrite LN(γ, β) → Linear(W (k×w), b) so that it reads the child stream E s with identical output.

    W' = W diag(γ) Eᵀ diag(1/γ') / r and β' = γ' ⊙ E u with u = β/γ; then W'(γ' ⊙ E n + β') = W(γ ⊙ n + β).
    Channels with (near) zero gain cannot carry their β through u; that part, W β_rest, goes into the bias,
    or — for bias-free heads (proj) — into a term t (1/γ')ᵀ that only sees the child's mean channel direction.
    """
    g, b, wt = gamma.double(), beta.double(), weight.float()
    g_c = carry_gains(stream, g)
    safe = g.abs() > 1e-6 * g.abs().max()
    u = torch.where(safe, b / torch.where(safe, g, 1.0), 0.0)
    rest = weight.double() @ torch.where(safe, 0.0, b) if not bool(safe.all()) else None
    w_c = stream.embed(wt * g.float()) / (stream.r * g_c.float())          # bulk: float32
    b_c = g_c * stream.embed(u)
    if bias is not None:
        return LNRead(g_c, b_c, w_c, bias.double() if rest is None else bias.double() + rest)
    if rest is not None and rest.abs().max() > 0:
        kappa = 1 - stream.r * u.sum().item() / stream.w2
        t = (rest - kappa * (weight.double() @ g)) / stream.w2
        w_c = w_c + torch.outer(t, 1 / g_c).float()
        b_c = b_c + kappa * g_c
    return LNRead(g_c, b_c, w_c, None)


def null_noise(stream: StreamMap, gamma_c: Tensor, rows: Tensor) -> Tensor:
    """Project read weights (k×w') so they are blind to every child LN output γ' ⊙ E v (exactly cancelling noise).

    N = (R − R E Eᵀ / r) diag(1/γ'): then N diag(γ') E = 0, so N adds nothing at step 0 but makes the new
    channels' gradients differ (symmetry breaking).
    """
    rd = rows.float()
    return (rd - stream.embed(stream.pull(rd)) / stream.r) / gamma_c.float()
