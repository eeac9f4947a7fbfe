"""Losses of supervised classification and of its distillation from the frozen predecessor.

Shapes: B images, K classes, d / d' feature widths. Nothing here knows about ranks or devices.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def classification_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy L = −(1/B) Σ_b log softmax(z_b)[y_b]      logits (B, K), labels (B,) → scalar."""
    return F.cross_entropy(logits.float(), labels)


def logit_kl_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """KL(teacher ‖ student) of the class distributions at temperature τ, times τ² (Hinton et al., 2015)::

        L = τ² · (1/B) Σ_b Σ_k p_bk (log p_bk − log q_bk),   p = softmax(z_t / τ), q = softmax(z_s / τ)

    student_logits, teacher_logits (B, K) → scalar."""
    s = (student_logits.float() / temperature).log_softmax(-1)
    t = (teacher_logits.float() / temperature).log_softmax(-1)
    return temperature**2 * F.kl_div(s, t, log_target=True, reduction="batchmean")


def feature_mse_loss(student_features: Tensor, teacher_features: Tensor) -> Tensor:
    """L = (1/(B d)) Σ_{b,i} (P(f_s)_{b,i} − f^t_{b,i})²      (B, d), (B, d) → scalar, where f are the final
    pre-logit features (the class token after the final LayerNorm) and P: d' → d the task's learned projection
    (identity for equal widths)."""
    return F.mse_loss(student_features.float(), teacher_features.float())
