"""Language-model tasks: a task owns the student, the frozen teacher and the loss, and returns a dict with `loss`.

Input: tokens (B, T + 1) — the first T are the inputs, the last T the next-token targets.

- `LMTask`: next-token cross-entropy (`compt.lm.losses.lm_loss`).
- `LMDistillTask`: the same plus distillation from the frozen predecessor: ``kl`` — token-level
  KL(teacher ‖ student) of the logits at temperature τ; ``hidden`` — MSE between the teacher's final hidden
  state (after the final RMSNorm) and a learned linear projection of the student's (rectangular identity at
  init, no parameters for equal widths); ``kl+hidden`` — both. L = L_lm + s(t) · α · (KL + MSE) with α the
  member's ``distill_weight`` and s(t) its ``distill_schedule`` (1 = constant), as on the CLIP side.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from compt.distributed import full_precision
from compt.errors import UserError
from compt.lm.losses import hidden_mse_loss, lm_loss, token_kl_loss
from compt.tasks import ProjectionState, freeze

LM_DISTILL_KINDS = {"kl": ("kl",), "hidden": ("hidden",), "kl+hidden": ("kl", "hidden")}


def forward_lm(model: nn.Module, inputs: Tensor, hidden: bool) -> tuple[Tensor, Tensor | None]:
    """(logits (B, T, V), final hidden state (B, T, d) or None) of a `LlamaForCausalLM`."""
    out = model(input_ids=inputs, output_hidden_states=hidden, use_cache=False)
    return out.logits, (out.hidden_states[-1] if hidden else None)


class LMTask(ProjectionState, nn.Module):
    """Plain next-token pre-training of `student`."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student
        self.weight_scale = 1.0   # s(t) of the distillation weight, set by the trainer each step (1: constant)

    def forward(self, tokens: Tensor) -> dict[str, Tensor]:
        logits, _ = forward_lm(self.student, tokens[:, :-1], hidden=False)
        with full_precision():
            loss = lm_loss(logits, tokens[:, 1:])
        return {"loss": loss, "lm_loss": loss.detach()}

    def post_step(self) -> None:
        """Nothing to clamp (kept for the trainer's task interface)."""


class LMDistillTask(LMTask):
    """Next-token loss plus distillation from a frozen teacher LM (module docstring)."""

    def __init__(self, student: nn.Module, teacher: nn.Module, *, kind: str, weight: float, student_dim: int,
                 teacher_dim: int, temperature: float = 1.0) -> None:
        super().__init__(student)
        if kind not in LM_DISTILL_KINDS:
            raise UserError(f"unknown LM distillation loss {kind!r} (known: {', '.join(LM_DISTILL_KINDS)}, none)")
        self.parts, self.weight, self.temperature = LM_DISTILL_KINDS[kind], weight, temperature
        self.teacher = freeze(teacher)
        self.proj: nn.Linear | None = None
        if "hidden" in self.parts and student_dim != teacher_dim:
            self.proj = nn.Linear(student_dim, teacher_dim, bias=False)
            with torch.no_grad():
                self.proj.weight.copy_(torch.eye(teacher_dim, student_dim))

    def train(self, mode: bool = True) -> LMDistillTask:
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, tokens: Tensor) -> dict[str, Tensor]:
        inputs, hidden = tokens[:, :-1], "hidden" in self.parts
        logits, h = forward_lm(self.student, inputs, hidden)
        with torch.no_grad():
            t_logits, t_h = forward_lm(self.teacher, inputs, hidden)
        with full_precision():  # the models may run in bf16; the losses and the projection do not
            task = lm_loss(logits, tokens[:, 1:])
            out, distill = {"lm_loss": task.detach()}, task.new_zeros(())
            if "kl" in self.parts:
                kl = token_kl_loss(logits, t_logits, self.temperature)
                distill, out["kl"] = distill + kl, kl.detach()
            if hidden:
                mse = hidden_mse_loss(h.float() if self.proj is None else self.proj(h.float()), t_h)
                distill, out["hidden_mse"] = distill + mse, mse.detach()
            return {"loss": task + self.weight_scale * self.weight * distill, **out}


def build_lm_task(student: nn.Module, *, distill: str = "none", weight: float = 0.0,
                  teacher: nn.Module | None = None, student_dim: int = 0, teacher_dim: int = 0,
                  temperature: float = 1.0) -> LMTask:
    """`LMTask` for ``distill="none"`` (or no teacher), else `LMDistillTask` with the named loss."""
    if distill == "none" or teacher is None:
        return LMTask(student)
    return LMDistillTask(student, teacher, kind=distill, weight=weight, student_dim=student_dim,
                         teacher_dim=teacher_dim, temperature=temperature)
