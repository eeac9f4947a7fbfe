"""What the CLI commands do for CLIP models (`compt grow`, `compt prune`), behind the `compt.clip.paradigm`
members they call: a parent's config (compt checkpoint, ``--from-model`` or inferred from a plain open_clip
checkpoint's shapes), the calibration set of ``--data KIND``, and the ``open_clip_config.json`` beside a child.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compt.errors import UserError

if TYPE_CHECKING:
    from compt.checkpoint import Checkpoint
    from compt.clip.models import ModelConfig


def parent_config(ckpt: Checkpoint, from_model: str | None) -> tuple[ModelConfig, str]:
    """The parent's config and a note on where it came from (checkpoint, --from-model or inference)."""
    from compt.clip.models import get_model_config

    if ckpt.model_config is not None:
        if from_model and get_model_config(from_model).to_open_clip() != ckpt.model_config.to_open_clip():
            raise UserError(f"--from-model {from_model} contradicts the checkpoint's own model "
                            f"{ckpt.model_config.name}")
        return ckpt.model_config, f"parent model {ckpt.model_config.name} (from the checkpoint)"
    if from_model:
        return get_model_config(from_model), f"parent model {from_model} (--from-model)"
    from compt.clip.growth.infer import infer_model_config

    cfg, same = infer_model_config(ckpt.state_dict)
    also = f"; same architecture as {', '.join(same)}" if same else ""
    return cfg, f"inferred parent model {cfg.name} from the checkpoint's shapes{also}"


def check_config_folder(out: Path, child_cfg: ModelConfig) -> None:
    """The folder's `open_clip_config.json` describes one model: refuse to overwrite it with another's."""
    existing = out.parent / "open_clip_config.json"
    if not existing.is_file():
        return
    try:
        same = json.loads(existing.read_text()).get("model_cfg") == json.loads(json.dumps(child_cfg.to_open_clip()))
    except (json.JSONDecodeError, AttributeError):
        same = False
    if not same:
        raise UserError(f"{existing} already describes another model (open_clip's local-dir: reads one config per "
                        f"folder); put {child_cfg.name} in its own folder with --out")


def grow_command(args: argparse.Namespace, ckpt: Checkpoint) -> int:
    """An open_clip child: compt checkpoint plus ``open_clip_config.json`` (plain open_clip parents too)."""
    from compt.checkpoint import save_checkpoint
    from compt.clip.growth import get_operator, grow
    from compt.clip.models import get_model_config, write_open_clip_config
    from compt.commands.grow import lineage

    get_operator(args.op)
    child_cfg, out = get_model_config(args.child), Path(args.out)
    check_config_folder(out, child_cfg)
    parent_cfg, note = parent_config(ckpt, args.from_model)
    # a SigLIP parent (learnable logit bias) grows into the SigLIP variant of the named child
    child_cfg = dataclasses.replace(child_cfg, init_logit_bias=parent_cfg.init_logit_bias)
    state = grow(ckpt.state_dict, parent_cfg, child_cfg, args.op, args.seed)
    save_checkpoint(out, state_dict=state, model_config=child_cfg, lineage=lineage(args, parent_cfg.name))
    config = write_open_clip_config(child_cfg, out.parent)
    print(note)
    print(f"grew {parent_cfg.name} -> {child_cfg.name} with {args.op} (seed {args.seed}): {out}  [{config.name}]")
    return 0


def prune_pair(args: argparse.Namespace, ckpt: Checkpoint) -> tuple[Any, Any, str]:
    """(parent config, child config, where the parent's came from), the pair checked (`validate_clip_prune`)."""
    from compt.clip.paradigm import PARADIGM
    from compt.clip.prune import validate_clip_prune

    if args.tokenizer:
        raise UserError("--tokenizer is for language models; a CLIP model's tokenizer is open_clip's")
    parent_cfg, note = parent_config(ckpt, args.from_model)
    child_cfg = PARADIGM.grown_config(parent_cfg, args.child)
    check_config_folder(Path(args.out), child_cfg)
    validate_clip_prune(parent_cfg, child_cfg)
    return parent_cfg, child_cfg, note


def calibration_set(args: argparse.Namespace, _ckpt: Any, parent_cfg: Any, samples: int, _tmp: str
                    ) -> tuple[Any, str, None]:
    """The calibration set of ``--data KIND --data-path P`` at the parent's image size and context."""
    from compt.clip.data import adapter, build_train_dataset
    from compt.clip.paradigm import check_data_kind
    from compt.config import DataConfig, validate_data

    kind = args.data or "synthetic"
    if adapter(kind).reads_path and not args.data_path:
        raise UserError(f"--data {kind} needs --data-path")
    data = DataConfig(kind=kind, path=args.data_path, num_samples=samples, seed=args.seed)
    validate_data(data)
    check_data_kind(data)
    return build_train_dataset(data, parent_cfg), f"{kind}{':' + args.data_path if args.data_path else ''}", None
