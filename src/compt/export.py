"""Export compt checkpoints as folders their field's library loads without compt installed.

Each paradigm writes its own folder (`compt.paradigm.Paradigm.export`); this module adds the provenance file
``compt_member.json`` (model, method, source checkpoint + sha256, lineage) and exports whole runs. A CLIP
member (`compt.clip.export`) is a folder with

    open_clip_config.json          {"model_cfg": ModelConfig.to_open_clip(), "preprocess_cfg": {}}  (one writer:
                                   `compt.clip.models.write_open_clip_config`, also used by `compt grow`)
    open_clip_model.safetensors    the open_clip state dict (the file name open_clip's local-dir loader prefers)
    compt_member.json              provenance: model, method, source checkpoint + sha256, lineage

so that ``open_clip.create_model_and_transforms('local-dir:FOLDER')`` builds the model with its weights, and
``open_clip.get_tokenizer('local-dir:FOLDER')`` gives the tokenizer at the model's context length. A run
directory exports every member (each chain stage and each individual baseline) under the run's own layout
(``chain/0i-<model>``, ``baselines/<model>``) plus ``members.json`` listing them.

Swin members are not exportable: their trunk is a timm model that compt registers at run time
(`compt.clip.swin`), which plain open_clip cannot build.

Language models (`compt.lm`; the checkpoint's own paradigm says so, `compt.checkpoint.Checkpoint.paradigm`)
export as Hugging Face folders instead (`compt.lm.models.export_pretrained`: ``config.json`` +
``model.safetensors``, plus the run's ``tokenizer.json`` and tokenizer config when the checkpoint lies in a run
that stored one) with the same ``compt_member.json``, so ``transformers.AutoModelForCausalLM.from_pretrained(FOLDER)``
and ``AutoTokenizer.from_pretrained(FOLDER)`` load them; the run layout and ``members.json`` are the same.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from compt.checkpoint import Checkpoint, load_checkpoint, sha256_file
from compt.errors import UserError
from compt.paradigm import paradigm_named

MEMBERS_FILE = "members.json"
PROVENANCE_FILE = "compt_member.json"


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
    from compt.config import read_run_config

    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
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


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, *, model_name: str = "",
                      methods: tuple[str, ...] = ()) -> Path:
    """Write `checkpoint` as an open_clip local-dir folder `out_dir` (a Hugging Face folder for a language
    model); returns the folder."""
    ckpt, out = load_checkpoint(checkpoint), Path(out_dir)
    paradigm_named(ckpt.paradigm).export(ckpt, out, model_name)
    info = {"model": exported_model(ckpt, model_name), "methods": list(methods),
            "source": str(Path(checkpoint).resolve()), "source_sha256": sha256_file(checkpoint),
            "lineage": ckpt.lineage}
    (out / PROVENANCE_FILE).write_text(json.dumps(info, indent=2, default=str) + "\n")
    return out


def exported_model(ckpt: Checkpoint, model_name: str) -> str:
    """The model name an export of `ckpt` records: its stored config's, else `model_name` (plain open_clip)."""
    cfg = ckpt.model_config
    return cfg.name if cfg is not None else model_name


def export_run(run_dir: str | Path, out_dir: str | Path) -> list[tuple[Member, Path]]:
    """Export every finished member of a run; writes ``members.json`` in `out_dir`."""
    run_dir, out = Path(run_dir), Path(out_dir)
    done = [(m, export_checkpoint(run_dir / m.key / "final.pt", out / m.key, methods=m.methods))
            for m in run_members(run_dir)]
    index = [asdict(m) for m, _ in done]
    (out / MEMBERS_FILE).write_text(json.dumps({"run": str(run_dir.resolve()), "members": index}, indent=2) + "\n")
    return done

