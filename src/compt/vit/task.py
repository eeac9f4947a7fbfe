"""The classification task: cross-entropy on the labels, plus distillation from the frozen predecessor.

Input: images (B, C, H, W) and labels (B,). ``kl`` — KL(teacher ‖ student) of the logits at temperature τ;
``feature`` — MSE between the teacher's final pre-logit features and a learned linear projection of the
student's (rectangular identity at init; none for equal widths); ``kl+feature`` — both.
L = CE + s(t) · α · (KL + MSE), α the member's ``distill_weight``, s(t) its ``distill_schedule``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from compt.distributed import full_precision
from compt.errors import UserError, unknown_name
from compt.tasks import ProjectionState, freeze
from compt.vit.losses import classification_loss, feature_mse_loss, logit_kl_loss

VIT_DISTILL_KINDS = {"kl": ("kl",), "feature": ("feature",), "kl+feature": ("kl", "feature")}


def forward_vit(model: nn.Module, images: Tensor) -> tuple[Tensor, Tensor]:
    """(logits (B, K), pre-logit features (B, d)) of a timm ViT through its public forward_features/forward_head."""
    features = model.forward_head(model.forward_features(images), pre_logits=True)
    return model.get_classifier()(features), features


class ViTTask(ProjectionState, nn.Module):
    """Plain supervised training of `student`."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student
        self.weight_scale = 1.0   # s(t), set by the trainer each step

    def forward(self, images: Tensor, labels: Tensor) -> dict[str, Tensor]:
        with full_precision():
            loss = classification_loss(self.student(images), labels)
        return {"loss": loss, "ce": loss.detach()}

    def post_step(self) -> None:
        """Nothing to clamp."""


class ViTDistillTask(ViTTask):
    """Cross-entropy plus distillation from a frozen teacher ViT (module docstring)."""

    def __init__(self, student: nn.Module, teacher: nn.Module, *, kind: str, weight: float, student_dim: int,
                 teacher_dim: int, temperature: float = 1.0) -> None:
        super().__init__(student)
        if kind not in VIT_DISTILL_KINDS:
            raise unknown_name("ViT distillation loss", kind, (*VIT_DISTILL_KINDS, "none"))
        if temperature <= 0:
            raise UserError(f"distill_temperature must be positive, got {temperature}")
        self.parts, self.weight, self.temperature = VIT_DISTILL_KINDS[kind], weight, temperature
        self.teacher = freeze(teacher)
        self.proj: nn.Linear | None = None
        self._features: list[Tensor] = []   # the student's pre-logit features (B, d') of the current forward
        if "feature" in self.parts:   # read at the head's input, so the wrapped student's own forward runs
            student.get_classifier().register_forward_hook(lambda _m, args, _out: self._features.append(args[0]))
        if "feature" in self.parts and student_dim != teacher_dim:
            self.proj = nn.Linear(student_dim, teacher_dim, bias=False)
            with torch.no_grad():
                self.proj.weight.copy_(torch.eye(teacher_dim, student_dim))

    def train(self, mode: bool = True) -> ViTDistillTask:
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, images: Tensor, labels: Tensor) -> dict[str, Tensor]:
        self._features.clear()
        logits = self.student(images)
        with torch.no_grad():
            t_logits, t_feats = forward_vit(self.teacher, images)
        with full_precision():
            ce = classification_loss(logits, labels)
            out, distill = {"ce": ce.detach()}, ce.new_zeros(())
            if "kl" in self.parts:
                kl = logit_kl_loss(logits, t_logits, self.temperature)
                distill, out["kl"] = distill + kl, kl.detach()
            if "feature" in self.parts:
                feats = self._features.pop().float()
                f = feats if self.proj is None else self.proj(feats)
                mse = feature_mse_loss(f, t_feats)
                distill, out["feature_mse"] = distill + mse, mse.detach()
            return {"loss": ce + self.weight_scale * self.weight * distill, **out}


def build_vit_task(student: nn.Module, *, distill: str = "none", weight: float = 0.0,
                   teacher: nn.Module | None = None, student_dim: int = 0, teacher_dim: int = 0,
                   temperature: float = 1.0) -> ViTTask:
    """`ViTTask` for ``distill="none"`` (or no teacher), else `ViTDistillTask` with the named loss."""
    if distill == "none" or teacher is None:
        return ViTTask(student)
    return ViTDistillTask(student, teacher, kind=distill, weight=weight, student_dim=student_dim,
                          teacher_dim=teacher_dim, temperature=temperature)
