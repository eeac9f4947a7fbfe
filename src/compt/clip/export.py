"""A CLIP member as an open_clip ``local-dir`` folder (`compt.export` adds provenance and whole runs).

The folder holds ``open_clip_config.json`` (`compt.clip.models.write_open_clip_config`) and the state dict as
``open_clip_model.safetensors``, the file name open_clip's local-dir loader prefers, so that
``open_clip.create_model_and_transforms('local-dir:FOLDER')`` builds the model with its weights.
"""

from __future__ import annotations

from pathlib import Path

import torch

from compt.checkpoint import Checkpoint
from compt.clip.models import ModelConfig, build_model, get_model_config, write_open_clip_config
from compt.errors import UserError

WEIGHTS_FILE = "open_clip_model.safetensors"


def _config_of(ckpt: Checkpoint, model_name: str) -> ModelConfig:
    cfg = ckpt.model_config
    if cfg is None:
        if not model_name:
            raise UserError(f"{ckpt.path} is a plain open_clip checkpoint without a model config; pass --model NAME")
        cfg = get_model_config(model_name)
    if cfg.is_swin:
        raise UserError(f"{cfg.name}: Swin members use a timm trunk that compt registers at run time; "
                        f"plain open_clip cannot build them, so they are not exported")
    return cfg


def _check_fits(cfg: ModelConfig, state: dict[str, torch.Tensor]) -> None:
    """Refuse weights whose keys or shapes differ from the model `cfg` builds (built on the meta device: no memory)."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build_model(cfg).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != expected:
        wrong = sorted(set(got) ^ set(expected)) or [k for k in expected if got[k] != expected[k]]
        raise UserError(f"weights do not fit model {cfg.name}: {len(wrong)} keys differ, e.g. {', '.join(wrong[:3])}")


def export_clip(ckpt: Checkpoint, out: Path, model_name: str) -> None:
    """Write `ckpt` (its stored config, or `model_name` for a plain open_clip file) as a local-dir folder."""
    from safetensors.torch import save_file

    cfg = _config_of(ckpt, model_name)
    _check_fits(cfg, ckpt.state_dict)
    write_open_clip_config(cfg, out)
    tensors = {k: v.detach().cpu().contiguous() for k, v in ckpt.state_dict.items()}
    tmp = out / f".{WEIGHTS_FILE}.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt", "model": cfg.name})
    tmp.replace(out / WEIGHTS_FILE)
