"""Export compt checkpoints as open_clip ``local-dir`` folders that load without compt installed.

An exported member is a folder with

    open_clip_config.json          {"model_cfg": ModelConfig.to_open_clip(), "preprocess_cfg": {}}  (one writer:
                                   `compt.models.write_open_clip_config`, also used by `compt grow`)
    open_clip_model.safetensors    the open_clip state dict (the file name open_clip's local-dir loader prefers)
    compt_member.json              provenance: model, method, source checkpoint + sha256, lineage

so that ``open_clip.create_model_and_transforms('local-dir:FOLDER')`` builds the model with its weights, and
``open_clip.get_tokenizer('local-dir:FOLDER')`` gives the tokenizer at the model's context length. A run
directory exports every member (each chain stage and each individual baseline) under the run's own layout
(``chain/0i-<model>``, ``baselines/<model>``) plus ``members.json`` listing them.

Swin members are not exportable: their trunk is a timm model that compt registers at run time
(`compt.swin`), which plain open_clip cannot build.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import tomllib
import torch

from compt.checkpoint import Checkpoint, load_checkpoint, sha256_file
from compt.errors import UserError
from compt.models import ModelConfig, build_model, get_model_config, write_open_clip_config

WEIGHTS_FILE = "open_clip_model.safetensors"
MEMBERS_FILE = "members.json"


@dataclass(frozen=True)
class Member:
    """One trained model of a run: ``key`` is its folder relative to the run (and to the export)."""

    key: str          # "chain/02-tiny_ViT-T", "baselines/tiny_ViT-T"
    model: str        # registered model name
    methods: tuple[str, ...]  # ("chain",), ("individual",) or both (member 1 trained once for both roles)
    index: int        # position in the chain (0-based)


def run_members(run_dir: str | Path) -> list[Member]:
    """Every finished member of a run directory (a folder with ``final.pt``), chain stages first."""
    from compt.chain import baseline_dir, plan_stages
    from compt.config import config_from_dict

    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").is_file():
        raise UserError(f"{run_dir} is not a compt run directory (no config.toml)")
    cfg = config_from_dict(tomllib.loads((run_dir / "config.toml").read_text()))
    individual = {baseline_dir(cfg, i): i for i in range(len(cfg.chain))}
    members = []
    for stage in plan_stages(cfg, baselines=True):
        if not (run_dir / stage.directory / "final.pt").is_file():
            continue
        methods = ("chain",) if stage.kind == "chain" else ("individual",)
        if stage.kind == "chain" and stage.directory in individual:
            methods = ("chain", "individual")
        members.append(Member(key=stage.directory, model=stage.member.model, methods=methods, index=stage.index))
    if not members:
        raise UserError(f"{run_dir}: no finished member (no final.pt) yet")
    return members


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


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, *, model_name: str = "",
                      methods: tuple[str, ...] = ()) -> Path:
    """Write `checkpoint` as an open_clip local-dir folder `out_dir`; returns the folder."""
    from safetensors.torch import save_file

    ckpt = load_checkpoint(checkpoint)
    cfg = _config_of(ckpt, model_name)
    _check_fits(cfg, ckpt.state_dict)
    out = Path(out_dir)
    write_open_clip_config(cfg, out)
    tensors = {k: v.detach().cpu().contiguous() for k, v in ckpt.state_dict.items()}
    tmp = out / f".{WEIGHTS_FILE}.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt", "model": cfg.name})
    tmp.replace(out / WEIGHTS_FILE)
    info = {"model": cfg.name, "methods": list(methods), "source": str(Path(checkpoint).resolve()),
            "source_sha256": sha256_file(checkpoint), "lineage": ckpt.lineage}
    (out / "compt_member.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    return out


def export_run(run_dir: str | Path, out_dir: str | Path) -> list[tuple[Member, Path]]:
    """Export every finished member of a run; writes ``members.json`` in `out_dir`."""
    run_dir, out = Path(run_dir), Path(out_dir)
    done = [(m, export_checkpoint(run_dir / m.key / "final.pt", out / m.key, methods=m.methods))
            for m in run_members(run_dir)]
    index = [asdict(m) for m, _ in done]
    (out / MEMBERS_FILE).write_text(json.dumps({"run": str(run_dir.resolve()), "members": index}, indent=2) + "\n")
    return done

