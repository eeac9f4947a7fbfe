"""Fine-tune every finished member of a run (or one checkpoint) and file the results in the run.

Layout: ``RUN/finetune/<member>/<dataset>.json`` (full fine-tuning) and ``<dataset>-linear.json`` (frozen
tower), ``<member>`` being the member's folder in the run (``chain/02-tiny_ViT-T``, ``baselines/tiny_ViT-T``;
the members `compt.export.run_members` finds). A single checkpoint files them under ``<its folder>/finetune/``.
Each result holds the held-out top-1 (%), the settings, epochs and steps, the train / held-out sizes, the
per-epoch history and the sha256 of the checkpoint it started from.

One fine-tune at a time per folder: it holds the lock of ``RUN/finetune`` (`compt.runlock`); a stop signal
(SIGTERM, SIGINT) ends it with one line (`compt.signals`), keeping the finished members and epochs.

Resuming: a member whose result exists for the same settings and checkpoint is skipped (a result made with
other settings is an error unless ``redo``). While a member trains, its end-of-epoch state is written to
``<dataset>[-linear].state.pt`` beside the result (atomically); a killed fine-tune restarts that member from its
last finished epoch — with the same numbers as an uninterrupted one, the data order being a function of the
seed and the epoch — or from scratch when the state was written for other settings or another checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from compt.checkpoint import atomic_save, atomic_write_json, sha256_file
from compt.clip.finetune.data import LabelledData, load_splits, parse_data
from compt.clip.finetune.recipe import Split, finetune_model
from compt.errors import UserError
from compt.finetune_config import FinetuneConfig
from compt.runlock import run_lock
from compt.signals import interrupt_on_signals

FINETUNE_DIR = "finetune"
STOP_HINT = "finished members and epochs are kept — run the same command again to resume"   # after a stop signal


@dataclass(frozen=True)
class Target:
    """One checkpoint to fine-tune and where its results go."""

    key: str                   # the member's folder in the run; "" for a lone checkpoint
    model: str
    methods: tuple[str, ...]   # ("chain",), ("individual",), both, or () for a lone checkpoint
    index: int
    checkpoint: Path
    out: Path                  # RUN/finetune/<member> (or CKPT_DIR/finetune)


def targets_of(path: str | Path) -> list[Target]:
    """The members of a CLIP run directory (chain stages, then baselines), or the one checkpoint `path`."""
    from compt.config import read_run_config
    from compt.export import run_members

    path = Path(path)
    if path.is_file():
        return [Target("", "", (), 0, path, path.parent / FINETUNE_DIR)]
    if not (path / "config.toml").is_file():
        raise UserError(f"{path} is not a run directory (no config.toml) nor a checkpoint file")
    if read_run_config(path).paradigm.name != "clip":
        raise UserError(f"{path} is a language-model run: `compt finetune` fine-tunes CLIP image towers")
    return [Target(m.key, m.model, m.methods, m.index, path / m.key / "final.pt", path / FINETUNE_DIR / m.key)
            for m in run_members(path)]


def result_name(data: LabelledData, mode: str) -> str:
    return data.name + ("-linear" if mode == "linear" else "")


def finetune_run(path: str | Path, *, data: str = "synthetic", mode: str = "full", redo: bool = False,
                 progress: bool = True, **settings: Any) -> list[dict[str, Any]]:
    """Fine-tune every finished member of the run directory `path` (or the checkpoint `path`) on `data`
    (``synthetic[:TASK]``, ``fashion-mnist[:ROOT]``, ``folder:PATH``) in `mode` (full | linear), with any
    `FinetuneConfig` field in `settings`; returns each member's result (skipped members' stored ones)."""
    fields = set(FinetuneConfig.__dataclass_fields__) - {"mode"}
    if unknown := sorted(set(settings) - fields):
        raise UserError(f"unknown fine-tuning setting {unknown[0]!r} (known: {', '.join(sorted(fields))})")
    cfg = FinetuneConfig(mode=mode, **settings)
    labelled = parse_data(data)
    targets = targets_of(path)
    splits: dict[int, tuple[Split, Split]] = {}
    folder = Path(path) / FINETUNE_DIR if Path(path).is_dir() else Path(path).parent / FINETUNE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    with interrupt_on_signals(STOP_HINT), run_lock(folder, ("fine-tuning folder", "wait for that fine-tune to end")):
        return [_finetune_target(t, labelled, cfg, splits, redo=redo, progress=progress) for t in targets]


def _finetune_target(t: Target, data: LabelledData, cfg: FinetuneConfig, splits: dict[int, tuple[Split, Split]],
                     *, redo: bool, progress: bool) -> dict[str, Any]:
    from compt.checkpoint import load_checkpoint
    from compt.paradigm import paradigm_named

    out = t.out / f"{result_name(data, cfg.mode)}.json"
    source = sha256_file(t.checkpoint)
    done = _finished(out, cfg, source, redo)
    if done is not None:
        print(f"compt finetune: {t.key or t.checkpoint}: {out.name} already done (top-1 {done['top1']:.1f} %), "
              f"skipped")
        return done
    ckpt = load_checkpoint(t.checkpoint)
    if ckpt.paradigm != "clip" or ckpt.model_config is None:
        raise UserError(f"{t.checkpoint} is not a compt CLIP checkpoint (with its model config)")
    model_cfg = ckpt.model_config
    size = model_cfg.vision.image_size
    if size not in splits:
        splits[size] = load_splits(data, size, cfg)
    train, held_out = splits[size]
    visual = paradigm_named("clip").create(model_cfg, ckpt.state_dict).visual
    state_path = out.with_suffix(".state.pt")
    state = _resume_state(state_path, cfg, source, t)
    start = time.perf_counter() - (state["wall_s"] if state else 0.0)

    def save(s: dict[str, Any]) -> None:
        atomic_save({**s, "settings": cfg.settings(), "source_sha256": source,
                     "wall_s": time.perf_counter() - start}, state_path)

    res = finetune_model(visual, model_cfg.embed_dim, train, held_out, cfg, state=state, save=save,
                         progress=progress, desc=f"{t.key or model_cfg.name} {result_name(data, cfg.mode)}")
    result = {"member": t.key, "model": model_cfg.name, "methods": list(t.methods), "index": t.index,
              "checkpoint": os.path.relpath(t.checkpoint, out.parent),   # a run's records name no absolute path
              "checkpoint_sha256": source, "data": data.spec, "dataset": data.name,
              "classes": list(train.classnames), "mode": cfg.mode, "top1": res["top1"], "epochs": cfg.epochs,
              "steps": res["steps"], "train_size": len(train.labels), "held_out_size": len(held_out.labels),
              "settings": cfg.settings(), "history": res["history"], "wall_s": time.perf_counter() - start,
              "resumed_from_epoch": len(state["history"]) if state else 0}
    atomic_write_json(out, result)
    state_path.unlink(missing_ok=True)
    print(f"compt finetune: {t.key or t.checkpoint}: held-out top-1 {res['top1']:.1f} % "
          f"({len(train.labels)} train / {len(held_out.labels)} held-out images) → {out}")
    return result


def _finished(out: Path, cfg: FinetuneConfig, source: str, redo: bool) -> dict[str, Any] | None:
    """The stored result at `out` when it is for these settings and this checkpoint; None: (re)do it."""
    if not out.is_file() or redo:
        return None
    done = json.loads(out.read_text())
    changed = [k for k, v in cfg.settings().items() if done.get("settings", {}).get(k) != v]
    if done.get("checkpoint_sha256") != source:
        changed.append("the checkpoint")
    if changed:
        raise UserError(f"{out} was made with other settings ({', '.join(changed)} differ): pass --redo to "
                        f"replace it")
    return done


def _resume_state(path: Path, cfg: FinetuneConfig, source: str, t: Target) -> dict[str, Any] | None:
    """The end-of-epoch state of a killed fine-tune of this member with these settings, else None (scratch)."""
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("settings") != cfg.settings() or state.get("source_sha256") != source:
        print(f"compt finetune: {t.key or t.checkpoint}: {path.name} is from other settings or another "
              f"checkpoint; starting this member from scratch")
        return None
    print(f"compt finetune: {t.key or t.checkpoint}: resuming from its own checkpoint after epoch "
          f"{len(state['history'])} of {cfg.epochs} ({path})")
    return state

