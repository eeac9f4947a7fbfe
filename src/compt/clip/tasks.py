"""Training tasks: a Task owns the student, the frozen teacher and the loss, and returns a dict with `loss`.

The trainer only calls ``task(images, tokens, index, *teacher_rows)``, ``task.post_step()`` and reads
``out["loss"]``; everything else in the dict (loss parts, the logit scale) is logged. Shapes: images
(B, 3, H, W), tokens (B, K, ctx) with K caption slots per image, index (B,) dataset indices; teacher_rows,
when the loader delivers a teacher cache's rows with the batch, (B, E') and (B, K, E').

Features leave the (possibly bf16-autocast) forwards as fp32; every loss, and the distillation projection, is
computed from them in fp32 (`compt.distributed.full_precision`).

- `ClipTask`: symmetric InfoNCE averaged over caption slots (global negatives across ranks), or SigLIP's
  sigmoid loss with the model's learnable logit bias when ``train.objective = "siglip"`` (`compt.clip.siglip`).
- `DistillTask`: the same plus distillation from a frozen teacher (``fd``: the paper's inverse feature
  distillation; ``affinity``: CLIP-KD's relational soft logit matching (CRD); ``icl``: CLIP-KD's
  interactive contrastive learning; ``fd+affinity``: both FD and affinity). Teacher
  features come from a forward of the teacher (eval mode, no grad) or from a `TeacherCache`: rows passed
  with the batch, or (callers that pass none) gathered from it by index on the host.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compt.clip.losses import (
    AFFINITY_WEIGHT,
    ICL_WEIGHT,
    affinity_distill_loss,
    feature_distill_loss,
    icl_distill_loss,
    multi_caption_clip_loss,
    multi_caption_siglip_loss,
)
from compt.clip.siglip import is_siglip
from compt.distributed import full_precision, gather_no_grad, gather_with_grad, unwrap
from compt.errors import UserError
from compt.tasks import ProjectionState, freeze

MAX_LOGIT_SCALE = math.log(100.0)  # open_clip clamps the learnable temperature at 100 after every step
# The one registry of distillation losses: config name → loss terms ("none" = no distillation).
DISTILL_KINDS = {"fd": ("fd",), "affinity": ("affinity",), "icl": ("icl",), "fd+affinity": ("fd", "affinity")}
DISTILL_NAMES = (*DISTILL_KINDS, "none")


class TeacherFeatures(Protocol):
    """Cached teacher outputs: rows by dataset index (image (B, E), text (B, K, E)) and the logit scale ()."""

    logit_scale: Tensor

    def rows(self, index: Tensor) -> tuple[Tensor, Tensor]: ...


def encode(model: nn.Module, images: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Run an open_clip CLIP through its forward (so DDP hooks fire) on all B·K captions.

    Returns normalised image (B, E) and text (B, K, E) features in fp32 and the exponentiated logit scale.
    """
    return encode_with_bias(model, images, tokens)[:3]


def encode_with_bias(model: nn.Module, images: Tensor, tokens: Tensor
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """`encode` plus the learnable logit bias of a SigLIP model (None for CLIP)."""
    if tokens.ndim == 2:  # (B, ctx): one caption per image
        tokens = tokens[:, None]
    b, k = tokens.shape[:2]
    image, text, scale, *bias = model(images, tokens.reshape(b * k, -1))
    return image.float(), text.float().reshape(b, k, -1), scale.float(), bias[0].float() if bias else None


class ClipTask(ProjectionState, nn.Module):
    """Plain CLIP pre-training of `student` (an open_clip CLIP, possibly wrapped by DDP/FSDP later)."""

    def __init__(self, student: nn.Module, objective: str | None = None) -> None:
        super().__init__()
        self.student, self.siglip = student, is_siglip(objective)
        self.weight_scale = 1.0   # s(t) of the distillation weight, set by the trainer each step (1: constant)

    def task_loss(self, image: Tensor, text: Tensor, scale: Tensor, bias: Tensor | None) -> Tensor:
        """InfoNCE, or SigLIP's sigmoid loss when the run's objective is siglip (features already gathered)."""
        if self.siglip:
            return multi_caption_siglip_loss(image, text, scale, bias)
        return multi_caption_clip_loss(image, text, scale)

    def forward(self, images: Tensor, tokens: Tensor, index: Tensor, *teacher_rows: Tensor) -> dict[str, Tensor]:
        image, text, scale, bias = encode_with_bias(self.student, images, tokens)
        with full_precision():  # the model's forward may run in bf16; its loss does not
            loss = self.task_loss(gather_with_grad(image), gather_with_grad(text), scale, bias)
        return {"loss": loss, "clip_loss": loss.detach(), **_scales(scale, bias)}

    @torch.no_grad()
    def post_step(self) -> None:
        """Clamp the learnable temperature to [0, log 100] (open_clip's rule, applied after each step)."""
        unwrap(self.student).logit_scale.clamp_(0, MAX_LOGIT_SCALE)


def _scales(scale: Tensor, bias: Tensor | None) -> dict[str, Tensor]:
    """The logged temperature (and SigLIP bias)."""
    return {"logit_scale": scale.detach()} | ({} if bias is None else {"logit_bias": bias.detach()})


def _rect_identity(out_dim: int, in_dim: int) -> Tensor:
    return torch.eye(out_dim, in_dim)


class DistillTask(ClipTask):
    """CLIP loss on the student plus distillation from a frozen teacher.

    L = L_clip + s(t) · (α · (FD(img) + FD(txt)) [fd] + 1 · affinity [affinity] + 1 · ICL [icl]), where
    s(t) = `weight_scale` is the stage's distillation schedule (1 = constant, the paper), FD compares
    the teacher's normalised embedding with T(student's normalised embedding) and ICL contrasts
    normalise(T(student's embedding)) with the teacher's other modality. T is one learnable bias-free linear
    map shared by both towers (they live in one joint space), initialised to the rectangular identity so that
    a function-preserving growth starts with zero FD loss; T is the identity (no parameters) when the
    embedding sizes match. `teacher` may be None when every batch's features come from `cache`.
    """

    def __init__(self, student: nn.Module, *, teacher: nn.Module | None, kind: str, weight: float,
                 student_dim: int, teacher_dim: int, cache: TeacherFeatures | None = None,
                 objective: str | None = None) -> None:
        super().__init__(student, objective)
        if kind not in DISTILL_KINDS:
            raise UserError(f"unknown distillation loss {kind!r} (known: {', '.join(DISTILL_KINDS)}, none)")
        if teacher is None and cache is None:
            raise ValueError("DistillTask needs a teacher module or a teacher cache")
        self.parts, self.weight, self.cache = DISTILL_KINDS[kind], weight, cache
        self.teacher = freeze(teacher) if teacher is not None else None
        if cache is not None:  # moves with the task to the device, so the step needs nothing from the host
            self.register_buffer("teacher_scale", cache.logit_scale.detach().float().clone(), persistent=False)
        self.proj: nn.Linear | None = None
        if ("fd" in self.parts or "icl" in self.parts) and student_dim != teacher_dim:
            self.proj = nn.Linear(student_dim, teacher_dim, bias=False)
            with torch.no_grad():
                self.proj.weight.copy_(_rect_identity(teacher_dim, student_dim))

    def train(self, mode: bool = True) -> DistillTask:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # the teacher never leaves eval mode
        return self

    def teacher_features(self, images: Tensor, tokens: Tensor, index: Tensor,
                         rows: tuple[Tensor, ...] = ()) -> tuple[Tensor, Tensor, Tensor]:
        """Teacher's normalised image (B, E'), text (B, K, E') features (fp32) and logit scale, without gradient."""
        if self.cache is not None:
            image, text = rows or tuple(r.to(images.device) for r in self.cache.rows(index.cpu()))
            return image.float(), text.float(), self.teacher_scale
        with torch.no_grad():
            return encode(self.teacher, images, tokens)

    def project(self, x: Tensor) -> Tensor:
        return x if self.proj is None else self.proj(x)

    def forward(self, images: Tensor, tokens: Tensor, index: Tensor, *teacher_rows: Tensor) -> dict[str, Tensor]:
        image, text, scale, bias = encode_with_bias(self.student, images, tokens)
        t_image, t_text, t_scale = self.teacher_features(images, tokens, index, teacher_rows)
        with full_precision():  # the forwards may run in bf16; the projection and every loss term do not
            return self.losses(image, text, scale, bias, t_image, t_text, t_scale)

    def losses(self, image: Tensor, text: Tensor, scale: Tensor, bias: Tensor | None, t_image: Tensor,
               t_text: Tensor, t_scale: Tensor) -> dict[str, Tensor]:
        """The task and distillation losses of fp32 student and teacher features (see the class doc)."""
        g_image, g_text = gather_with_grad(image), gather_with_grad(text)
        clip = self.task_loss(g_image, g_text, scale, bias)
        out = {"clip_loss": clip.detach(), **_scales(scale, bias)}
        loss = clip
        if "fd" in self.parts:
            # local samples only: DDP's gradient averaging turns the per-rank means into the global mean
            fd_image = feature_distill_loss(self.project(image), t_image)
            fd_text = feature_distill_loss(self.project(text), t_text)
            loss = loss + self.weight_scale * self.weight * (fd_image + fd_text)
            out |= {"fd_image": fd_image.detach(), "fd_text": fd_text.detach()}
        if "affinity" in self.parts:
            affinity = affinity_distill_loss(g_image, g_text, scale, gather_no_grad(t_image),
                                             gather_no_grad(t_text), t_scale)
            loss = loss + self.weight_scale * AFFINITY_WEIGHT * affinity
            out["affinity"] = affinity.detach()
        if "icl" in self.parts:
            s_image, s_text = (F.normalize(self.project(x), dim=-1) for x in (g_image, g_text))
            icl = icl_distill_loss(s_image, s_text, scale, gather_no_grad(t_image), gather_no_grad(t_text))
            loss = loss + self.weight_scale * ICL_WEIGHT * icl
            out["icl"] = icl.detach()
        return {"loss": loss, **out}


def build_task(student: nn.Module, *, distill: str = "none", weight: float = 0.0, teacher: nn.Module | None = None,
               student_dim: int = 0, teacher_dim: int = 0, cache: TeacherFeatures | None = None,
               objective: str | None = None) -> ClipTask:
    """`ClipTask` for ``distill="none"``, else `DistillTask` with the named loss (the caller — the trainer,
    from its `StageSpec` — has already decided whether the stage distills and which objective it trains)."""
    if distill == "none":
        return ClipTask(student, objective)
    return DistillTask(student, teacher=teacher, kind=distill, weight=weight, student_dim=student_dim,
                       teacher_dim=teacher_dim, cache=cache, objective=objective)
