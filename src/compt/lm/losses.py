"""Losses of language-model pre-training and of its distillation from the frozen predecessor.

Shapes: B sequences of T tokens, V vocabulary entries, d / d' hidden sizes. Logits are the model's raw
outputs; nothing here knows about ranks or devices.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def lm_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Next-token cross-entropy, mean over all B·T positions.

    L = −(1/(B T)) Σ_{b,t} log softmax(z_{b,t})[y_{b,t}]      logits (B, T, V), targets (B, T) → scalar.
    `targets` are the inputs shifted by one (the data yields T + 1 tokens per sample).
    """
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())


def token_kl_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Token-level distillation KL(teacher ‖ student) at temperature τ, mean over positions, times τ².

    With p = softmax(z_t / τ) and q = softmax(z_s / τ) per position::

        L = τ² · (1/(B T)) Σ_{b,t} Σ_v p_v (log p_v − log q_v)

    The τ² keeps gradient magnitudes comparable across temperatures (Hinton et al., 2015).
    student_logits, teacher_logits (B, T, V) → scalar.
    """
    s = (student_logits.float() / temperature).log_softmax(-1).flatten(0, 1)
    t = (teacher_logits.float() / temperature).log_softmax(-1).flatten(0, 1)
    return temperature**2 * F.kl_div(s, t, log_target=True, reduction="batchmean")


def hidden_mse_loss(student_hidden: Tensor, teacher_hidden: Tensor) -> Tensor:
    """Squared error of the (projected) student's final hidden state against the teacher's.

    L = (1/(B T d)) Σ_{b,t,i} (P(h_s)_{b,t,i} − h^t_{b,t,i})²      (B, T, d), (B, T, d) → scalar,
    where P: d' → d is the learnable projection of the distillation task (identity for equal widths).
    """
    return F.mse_loss(student_hidden.float(), teacher_hidden.float())
