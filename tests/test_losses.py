"""Every loss against a naive loop implementation of its docstring formula (and open_clip where it has one)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss, DistillClipLoss

from compt.clip.losses import (
    affinity_distill_loss,
    clip_loss,
    feature_distill_loss,
    icl_distill_loss,
    multi_caption_clip_loss,
    soft_cross_entropy,
)


def _unit(*shape: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1).double()


def naive_ce(logits: list[list[float]], row: int, target: int) -> torch.Tensor:
    return -(logits[row][target] - torch.logsumexp(torch.stack(logits[row]), 0))


def naive_clip(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    b = len(image)
    z = [[scale * (image[i] * text[j]).sum() for j in range(b)] for i in range(b)]
    zt = [[z[j][i] for j in range(b)] for i in range(b)]
    return sum(naive_ce(z, i, i) + naive_ce(zt, i, i) for i in range(b)) / (2 * b)


def naive_soft_ce(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    total = 0.0
    for r in range(len(teacher)):
        p = [math.exp(v) for v in teacher[r].tolist()]
        for c in range(teacher.shape[1]):
            total = total - p[c] / sum(p) * (student[r, c] - torch.logsumexp(student[r], 0))
    return total / len(teacher)


def test_clip_loss_matches_naive_and_open_clip() -> None:
    image, text, scale = _unit(6, 5), _unit(6, 5, seed=1), torch.tensor(7.0, dtype=torch.float64)
    ours = clip_loss(image, text, scale)
    torch.testing.assert_close(ours, naive_clip(image, text, scale))
    torch.testing.assert_close(ours, ClipLoss()(image, text, scale))


def test_clip_loss_gradient_matches_naive() -> None:
    image, text = _unit(4, 3).requires_grad_(), _unit(4, 3, seed=2).requires_grad_()
    scale = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    grads = torch.autograd.grad(clip_loss(image, text, scale), (image, text, scale))
    ref = torch.autograd.grad(naive_clip(image, text, scale), (image, text, scale))
    for g, r in zip(grads, ref, strict=True):
        torch.testing.assert_close(g, r)


def test_multi_caption_clip_loss_is_mean_over_slots() -> None:
    image, text, scale = _unit(5, 4), _unit(5, 3, 4, seed=3), torch.tensor(10.0, dtype=torch.float64)
    ref = sum(naive_clip(image, text[:, k], scale) for k in range(3)) / 3
    torch.testing.assert_close(multi_caption_clip_loss(image, text, scale), ref)
    torch.testing.assert_close(multi_caption_clip_loss(image, text[:, :1], scale), clip_loss(image, text[:, 0], scale))


@pytest.mark.parametrize("shape", [(5, 4), (5, 3, 4)])
def test_feature_distill_loss_mean_over_dims_then_samples(shape: tuple[int, ...]) -> None:
    s, t = _unit(*shape), _unit(*shape, seed=4)
    rows_s, rows_t = s.reshape(-1, shape[-1]), t.reshape(-1, shape[-1])
    per_row = [sum((rows_s[n, e] - rows_t[n, e]) ** 2 for e in range(shape[-1])) / shape[-1]
               for n in range(len(rows_s))]
    torch.testing.assert_close(feature_distill_loss(s, t), (sum(per_row) / len(per_row)).float())


def test_soft_cross_entropy_matches_naive() -> None:
    teacher, student = torch.randn(4, 6).double(), torch.randn(4, 6).double()
    torch.testing.assert_close(soft_cross_entropy(teacher, student), naive_soft_ce(teacher, student))


def test_affinity_loss_matches_naive_and_open_clip() -> None:
    b, k = 5, 2
    image, text, scale = _unit(b, 4), _unit(b, k, 4, seed=5), torch.tensor(9.0, dtype=torch.float64)
    t_image, t_text, t_scale = _unit(b, 6, seed=6), _unit(b, k, 6, seed=7), torch.tensor(20.0, dtype=torch.float64)
    ref = 0.0
    for slot in range(k):
        z = torch.stack([torch.stack([scale * image[i] @ text[j, slot] for j in range(b)]) for i in range(b)])
        zt = torch.stack([torch.stack([t_scale * t_image[i] @ t_text[j, slot] for j in range(b)]) for i in range(b)])
        ref = ref + (naive_soft_ce(zt, z) + naive_soft_ce(zt.T, z.T)) / 2 / k
    ours = affinity_distill_loss(image, text, scale, t_image, t_text, t_scale)
    torch.testing.assert_close(ours, ref)
    oc = DistillClipLoss()(image, text[:, 0], scale, t_image, t_text[:, 0], t_scale, output_dict=True)
    one = affinity_distill_loss(image, text[:, :1], scale, t_image, t_text[:, :1], t_scale)
    torch.testing.assert_close(one, oc["distill_loss"])


def test_icl_loss_matches_naive_infonce_across_models() -> None:
    """CLIP-KD's ICL: student image vs teacher captions and student caption vs teacher images (InfoNCE)."""
    b, k = 5, 2
    image, text, scale = _unit(b, 4, seed=11), _unit(b, k, 4, seed=12), torch.tensor(9.0, dtype=torch.float64)
    t_image, t_text = _unit(b, 4, seed=13), _unit(b, k, 4, seed=14)

    def nce(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        rows = [-(scale * queries[i] @ keys[i]) + torch.logsumexp(torch.stack([scale * queries[i] @ keys[j]
                                                                               for j in range(b)]), 0)
                for i in range(b)]
        return sum(rows) / b

    ref = sum((nce(image, t_text[:, s]) + nce(text[:, s], t_image)) / 2 for s in range(k)) / k
    torch.testing.assert_close(icl_distill_loss(image, text, scale, t_image, t_text), ref)
    # a student equal to its teacher gets CLIP's own loss
    same = icl_distill_loss(image, text, scale, image, text)
    torch.testing.assert_close(same, multi_caption_clip_loss(image, text, scale))
