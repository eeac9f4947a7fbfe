"""The task contract (`Task`) and what every paradigm's task shares (`compt.clip.tasks`, `compt.lm.task`): the
frozen teacher and the resume state of a learnable distillation projection.

A task owns the student, the frozen teacher and the loss; the paradigm runs a batch through it
(`compt.paradigm.Paradigm.forward`, a dict holding ``loss``), and the trainer saves and restores its
``extra_state()`` (trainable tensors outside the student) in resume checkpoints.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from compt.errors import UserError


@runtime_checkable
class Task(Protocol):
    """What the trainer asks of a stage's task (an `nn.Module`, `compt.paradigm.Paradigm.build_task`)."""

    student: nn.Module     # the model trained; the trainer replaces it by its DDP/FSDP/compiled wrapping
    weight_scale: float    # s(t) of the distillation weight, set by the trainer before each step (1: constant)

    def post_step(self) -> None:
        """Anything after each optimizer step (CLIP: clamp the learnable temperature)."""

    def extra_state(self) -> dict[str, Tensor]:
        """Trainable tensors outside the student (saved in resume checkpoints only)."""

    def load_extra_state(self, state: dict[str, Tensor]) -> None:
        """Restore `extra_state()` from a resume checkpoint."""


def task_problems(task: Any) -> list[str]:
    """The members of the `Task` contract that `task` lacks (an `nn.Module` first); [] = it conforms."""
    missing = [] if isinstance(task, nn.Module) else ["nn.Module"]
    return missing + [m for m in ("student", "weight_scale", "post_step", "extra_state", "load_extra_state")
                      if not hasattr(task, m)]


def freeze(model: nn.Module) -> nn.Module:
    """Teacher mode: eval, no parameter requires grad."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class ProjectionState:
    """Resume state of a task's optional learnable distillation projection `proj` (absent or None: no state)."""

    def _proj(self) -> nn.Linear | None:
        return getattr(self, "proj", None)

    def extra_state(self) -> dict[str, Tensor]:
        """Trainable tensors outside the student (saved in resume checkpoints only)."""
        proj = self._proj()
        return {} if proj is None else {"proj.weight": proj.weight.detach().cpu().clone()}

    def load_extra_state(self, state: dict[str, Tensor]) -> None:
        if set(state) != set(self.extra_state()):
            raise UserError(f"checkpoint task state {sorted(state)} does not fit this task "
                            f"({sorted(self.extra_state())})")
        if (proj := self._proj()) is not None:
            with torch.no_grad():
                proj.weight.copy_(state["proj.weight"])
