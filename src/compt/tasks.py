"""What every paradigm's task shares (`compt.clip.tasks`, `compt.lm.task`): the frozen teacher and the resume
state of a learnable distillation projection.

A task owns the student, the frozen teacher and the loss; the trainer calls it and reads ``out["loss"]``, and
saves and restores ``extra_state()`` (trainable tensors outside the student) in resume checkpoints.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from compt.errors import UserError


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
