"""Loss functions of CLIP pre-training and of CoM-PT's distillation, as small standalone functions.

Shapes: B samples, K caption slots per image, E embedding dims. Features are L2-normalised embeddings as
open_clip's ``CLIP.forward`` returns them; ``logit_scale`` is the already exponentiated scale s = exp(t).
Nothing here knows about ranks: the caller passes features gathered over the global batch
(`compt.distributed.gather_with_grad`) when it wants global negatives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# CLIP-KD (Yang et al. 2024) weights its contrastive KD terms 1:1 with the task loss (open_clip's
# DistillClipLoss does the same for the affinity term).
AFFINITY_WEIGHT = 1.0
ICL_WEIGHT = 1.0


def clip_loss(image: Tensor, text: Tensor, logit_scale: Tensor) -> Tensor:
    """Symmetric InfoNCE of paired embeddings.

    With logits Z = s · I Tᵀ  (B×B; row i = image i against every caption)::

        L = ½ · [ CE(Z, y) + CE(Zᵀ, y) ],   y = (0, 1, …, B−1),
        CE(Z, y) = −(1/B) Σ_i log softmax(Z_i)[y_i]

    image (B, E), text (B, E), logit_scale () → scalar.
    """
    logits = logit_scale * image @ text.T  # (B, B)
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def multi_caption_clip_loss(image: Tensor, text: Tensor, logit_scale: Tensor) -> Tensor:
    """InfoNCE averaged over caption slots (the official recipe's 1 raw + 6 sampled captions).

    L = (1/K) Σ_k clip_loss(I, T[:, k], s)     image (B, E), text (B, K, E) → scalar.
    """
    return torch.stack([clip_loss(image, text[:, k], logit_scale) for k in range(text.shape[1])]).mean()


def feature_distill_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Squared feature error, mean over dims then over samples (the paper's ‖F_t − T(F_s)‖² per modality).

    L = (1/N) Σ_n (1/E) Σ_e (S_ne − T_ne)²     student, teacher (..., E) with N = all leading dims → scalar.
    The inverse-FD term of a stage is α · (L(img) + L(txt)) with α = `MemberConfig.distill_weight`.
    """
    return F.mse_loss(student.float(), teacher.float())


def soft_cross_entropy(teacher_logits: Tensor, student_logits: Tensor) -> Tensor:
    """Cross-entropy of the student's distribution against the teacher's soft targets, row-wise.

    L = −(1/R) Σ_r Σ_c softmax(Z^t_r)_c · log softmax(Z^s_r)_c     (R, C), (R, C) → scalar.
    """
    return -(teacher_logits.softmax(dim=1) * student_logits.log_softmax(dim=1)).sum(dim=1).mean()


def affinity_distill_loss(image: Tensor, text: Tensor, logit_scale: Tensor, teacher_image: Tensor,
                          teacher_text: Tensor, teacher_logit_scale: Tensor) -> Tensor:
    """CLIP-KD's interactive contrastive (affinity) distillation, averaged over caption slots.

    Per slot k, with student logits Z = s · I T_kᵀ and teacher logits Z' = s' · I' T'_kᵀ (B×B)::

        L_k = ½ · [ H(Z', Z) + H(Z'ᵀ, Zᵀ) ],   H = `soft_cross_entropy`,   L = (1/K) Σ_k L_k

    Same as open_clip's ``DistillClipLoss`` distillation term for K = 1.
    image (B, E), text (B, K, E), teacher_image (B, E'), teacher_text (B, K, E') → scalar.
    """
    losses = []
    for k in range(text.shape[1]):
        z = logit_scale * image @ text[:, k].T  # (B, B)
        zt = teacher_logit_scale * teacher_image @ teacher_text[:, k].T
        losses.append((soft_cross_entropy(zt, z) + soft_cross_entropy(zt.T, z.T)) / 2)
    return torch.stack(losses).mean()


def icl_distill_loss(image: Tensor, text: Tensor, logit_scale: Tensor, teacher_image: Tensor,
                     teacher_text: Tensor) -> Tensor:
    """CLIP-KD's interactive contrastive learning (ICL), averaged over caption slots.

    The student's embeddings are contrasted against the teacher's of the other modality (InfoNCE, the
    student's temperature s). Per slot k, with y = (0, …, B−1)::

        Z_i2t = s · I Tᵗ_kᵀ,   Z_t2i = s · T_k Iᵗᵀ                        (B×B)
        L_k = ½ · [ CE(Z_i2t, y) + CE(Z_t2i, y) ],   L = (1/K) Σ_k L_k

    Student and teacher embeddings must share one width (the caller projects the student's first).
    image (B, E), text (B, K, E), teacher_image (B, E), teacher_text (B, K, E) → scalar.
    """
    assert image.shape[-1] == teacher_image.shape[-1] == text.shape[-1] == teacher_text.shape[-1]
    labels = torch.arange(image.shape[0], device=image.device)
    losses = []
    for k in range(text.shape[1]):
        i2t = logit_scale * image @ teacher_text[:, k].T  # (B, B): student image i against teacher captions
        t2i = logit_scale * text[:, k] @ teacher_image.T  # (B, B): student caption i against teacher images
        losses.append((F.cross_entropy(i2t, labels) + F.cross_entropy(t2i, labels)) / 2)
    return torch.stack(losses).mean()


def siglip_loss(image: Tensor, text: Tensor, logit_scale: Tensor, logit_bias: Tensor) -> Tensor:
    """SigLIP's pairwise sigmoid loss (open_clip's `SigLipLoss` on one process).

    With logits Z = s · I Tᵀ + b (B×B) and labels y_ij = +1 if i = j else −1::

        L = −(1/B) Σ_i Σ_j log σ(y_ij · Z_ij)

    image (B, E), text (B, E), logit_scale (), logit_bias () → scalar. Callers pass features gathered over
    the global batch, so every rank computes the global loss (as for `clip_loss`).
    """
    from open_clip.loss import SigLipLoss

    return SigLipLoss()(image, text, logit_scale, logit_bias)


def multi_caption_siglip_loss(image: Tensor, text: Tensor, logit_scale: Tensor, logit_bias: Tensor) -> Tensor:
    """`siglip_loss` averaged over caption slots: (1/K) Σ_k L(I, T[:, k])   image (B, E), text (B, K, E)."""
    return torch.stack([siglip_loss(image, text[:, k], logit_scale, logit_bias)
                        for k in range(text.shape[1])]).mean()
