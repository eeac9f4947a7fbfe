"""The SigLIP objective (``train.objective = "siglip"``): sigmoid pairwise loss with a learnable logit bias.

A SigLIP member is the same open_clip `CLIP` with one extra scalar parameter ``logit_bias``, created by
open_clip itself from ``init_logit_bias`` (open_clip's SigLIP configs use −10; the temperature keeps
open_clip's default initial value, log(1/0.07), and the same clamp at 100). The model config carries the
bias (`ModelConfig.init_logit_bias`), so checkpoints describe themselves and growth carries ``logit_bias``
like ``logit_scale``. The loss is open_clip's `SigLipLoss` (`compt.clip.losses.siglip_loss`).
"""

from __future__ import annotations

import dataclasses

from compt.clip.models import ModelConfig
from compt.errors import unknown_name

OBJECTIVES = ("clip", "siglip")
INIT_LOGIT_BIAS = -10.0   # open_clip's SigLIP model configs (e.g. ViT-B-16-SigLIP.json)


def is_siglip(objective: str | None) -> bool:
    """The one place that answers "does this run train with the sigmoid loss?" (None means clip)."""
    if objective not in (None, *OBJECTIVES):
        raise unknown_name("training objective", str(objective), OBJECTIVES)
    return objective == "siglip"


def model_for_objective(cfg: ModelConfig, objective: str | None) -> ModelConfig:
    """`cfg` with the learnable logit bias that `objective` needs (unchanged for clip)."""
    return dataclasses.replace(cfg, init_logit_bias=INIT_LOGIT_BIAS if is_siglip(objective) else None)
