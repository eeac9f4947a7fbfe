"""Run a whole CoM-PT chain (and optionally the individual baselines) from a run config.

The run directory is the single source of truth::

    RUN/config.toml                 resolved config (what was asked)
    RUN/run.json                    stage states: pending / running / done / failed
    RUN/chain/01-<model>/           member 1, trained from scratch
    RUN/chain/0i-<model>/init.pt    member i grown from member i-1's final.pt (written atomically)
    RUN/chain/0i-<model>/…          final.pt, last.pt, metrics.jsonl, result.json, lineage.json
    RUN/baselines/<model>/          every member trained alone for the individual schedule

Re-running the same command skips finished stages and resumes an interrupted one from its last.pt. Each stage
records a fingerprint of the settings it depends on; a finished stage whose settings changed is refused
(or rerun with ``from_stage``).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import tomli_w
import torch

from compt import distributed as dist
from compt.checkpoint import Checkpoint, atomic_write_json, load_checkpoint, save_checkpoint, sha256_file
from compt.config import RUNTIME_KEYS, MemberConfig, RunConfig, config_to_dict
from compt.errors import UserError
from compt.models import ModelConfig, build_model, get_model_config
from compt.stage import StageSpec, resolve_spec


@dataclass(frozen=True)
class Stage:
    """One unit of work: a chain member (grown + distilled, or from scratch) or an individual baseline."""

    key: str                 # "chain-1", "baseline-3"
    kind: str                # "chain" | "baseline"
    index: int               # member index in the chain (0-based)
    member: MemberConfig
    directory: str           # relative to the run directory

    @property
    def from_scratch(self) -> bool:
        return self.kind == "baseline" or self.index == 0


def slug(model: str) -> str:
    return model.replace("/", "_")


def stage_dir(kind: str, index: int, model: str) -> str:
    """A stage's folder, relative to the run directory: ``chain/0i-<model>`` or ``baselines/<model>``."""
    return f"chain/{index + 1:02d}-{slug(model)}" if kind == "chain" else f"baselines/{slug(model)}"


def plan_stages(cfg: RunConfig, baselines: bool) -> list[Stage]:
    """Chain stages in order, then the baselines that are not already a chain stage.

    Member 1's baseline *is* chain stage 1 when the individual schedule equals member 1's epochs
    (same model, data, seed, schedule), so it is trained once and reported in both roles.
    """
    stages = [Stage(f"chain-{i + 1}", "chain", i, m, stage_dir("chain", i, m.model))
              for i, m in enumerate(cfg.chain)]
    if baselines:
        stages += [individual_stage(cfg, i) for i in range(len(cfg.chain)) if i > 0 or not _member1_is_baseline(cfg)]
    return stages


def individual_stage(cfg: RunConfig, index: int) -> Stage:
    """Member `index` trained alone for the individual schedule (its baseline)."""
    m = cfg.chain[index]
    member = MemberConfig(model=m.model, epochs=cfg.individual_epochs)
    return Stage(f"baseline-{index + 1}", "baseline", index, member, stage_dir("baseline", index, m.model))


def _member1_is_baseline(cfg: RunConfig) -> bool:
    """Member 1 trains exactly the individual recipe (same epochs, the shared learning rate)."""
    return cfg.individual_epochs == cfg.chain[0].epochs and cfg.chain[0].lr is None


def baseline_dir(cfg: RunConfig, index: int) -> str:
    """Where member `index`'s individual baseline lives (chain stage 1 may double as member 1's)."""
    kind = "chain" if index == 0 and _member1_is_baseline(cfg) else "baseline"
    return stage_dir(kind, index, cfg.chain[index].model)


# Member and data settings added after the first fingerprints were written: they enter a fingerprint only
# when set, so run directories made before they existed keep the same fingerprint.
MEMBER_SETTINGS_ADDED_LATER = ("decay_fraction", "distill_schedule", "patch_dropout")
DATA_SETTINGS_ADDED_LATER = ("shuffle_buffer", "resampled")


def _later_settings(m: MemberConfig) -> dict[str, Any]:
    return {k: getattr(m, k) for k in MEMBER_SETTINGS_ADDED_LATER if getattr(m, k) is not None}


def fingerprint(cfg: RunConfig, stage: Stage) -> dict[str, Any]:
    """The settings a stage's result depends on (for detecting config changes on resume)."""
    if stage.from_scratch:  # growth/distillation settings do not touch a from-scratch run
        m = stage.member
        members = [{"model": m.model, "epochs": m.epochs, "warmup_steps": m.warmup_steps, "lr": m.lr,
                    **_later_settings(m)}]
    else:
        members = [{k: v for k, v in asdict(m).items() if k not in MEMBER_SETTINGS_ADDED_LATER} | _later_settings(m)
                   for m in (*cfg.chain[: stage.index], stage.member)]
    data = {k: v for k, v in asdict(cfg.data).items() if not (k in DATA_SETTINGS_ADDED_LATER and v is None)}
    return {"members": members, "data": data, "train": _without_runtime(asdict(cfg.train))}


def _without_runtime(train: dict[str, Any]) -> dict[str, Any]:
    """The train settings that change results (older fingerprints may still hold runtime keys)."""
    return {k: v for k, v in train.items() if k not in RUNTIME_KEYS}


def settings_changes(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Differences between two fingerprints, one 'key: old -> new' line each (a key absent from one side
    counts as None there, so a setting added to compt later, left at its default None, is no change)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += settings_changes(old.get(k), new.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in settings_changes(a, b, f"{prefix}[{i}]")]
    return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]


class RunState:
    """`run.json`: per-stage state, written atomically by rank 0."""

    def __init__(self, run_dir: Path, stages: list[Stage], name: str) -> None:
        self.path = run_dir / "run.json"
        old = json.loads(self.path.read_text()) if self.path.is_file() else {}
        prev = {s["key"]: s for s in old.get("stages", [])}
        self.data = {"name": name, "stages": [
            {"key": s.key, "kind": s.kind, "model": s.member.model, "epochs": s.member.epochs,
             "dir": s.directory, "state": prev.get(s.key, {}).get("state", "pending")} for s in stages]}
        self.save()

    def set(self, key: str, state: str, **extra: Any) -> None:
        for s in self.data["stages"]:
            if s["key"] == key:
                s.update(state=state, **extra)
        self.save()

    def save(self) -> None:
        write_json(self.path, self.data)


def write_json(path: Path, obj: Any) -> None:
    """Atomic JSON write (rank 0 only)."""
    if dist.is_main():
        atomic_write_json(path, obj)


def check_or_reset(run_dir: Path, cfg: RunConfig, stages: list[Stage], from_stage: str | None) -> None:
    """Refuse finished stages whose settings changed; with `from_stage`, wipe that stage and later ones."""
    keys = {s.key: s for s in stages}
    if from_stage is not None and from_stage not in keys:
        raise UserError(f"--from-stage {from_stage!r} is not a stage of this run (stages: {', '.join(keys)})")
    wipe = False
    for s in stages:
        wipe = wipe or s.key == from_stage
        d = run_dir / s.directory
        # later chain members descend from a rerun chain stage; baselines depend on nothing else
        if wipe and (s.key == from_stage or s.kind == keys[from_stage].kind == "chain"):
            if dist.is_main() and d.exists():
                shutil.rmtree(d)
            continue
        lineage = d / "lineage.json"
        if not lineage.is_file():
            continue
        old = json.loads(lineage.read_text()).get("fingerprint")
        if old is not None and isinstance(old.get("train"), dict):
            old = {**old, "train": _without_runtime(old["train"])}
        new = json.loads(json.dumps(fingerprint(cfg, s), default=str))
        if old is not None and (changes := "; ".join(settings_changes(old, new)[:4])):
            raise UserError(f"stage {s.key} ({s.member.model}) was run with other settings ({changes}); "
                            f"use a new run directory or rerun from it with --from-stage {s.key}")
    dist.barrier()


def grow_into(stage_dir: Path, parent_ckpt: Path, parent_sha256: str, parent_state: dict[str, torch.Tensor],
              parent_cfg: ModelConfig, child_cfg: ModelConfig, op: str, seed: int) -> Checkpoint:
    """Grow the child's initial weights from the parent's final weights, once (atomic init.pt).

    The growth time is recorded in init.pt's lineage (``grow_s``), so it survives resumes.
    """
    init = stage_dir / "init.pt"
    if not init.is_file():
        if dist.is_main():
            t0 = time.perf_counter()
            if op == "none":
                torch.manual_seed(seed)
                state = build_model(child_cfg).state_dict()
            else:
                from compt.growth import grow

                state = grow(parent_state, parent_cfg, child_cfg, op, seed)
            lineage = {"parent": str(parent_ckpt), "parent_sha256": parent_sha256, "operator": op, "seed": seed,
                       "stage": "grow", "grow_s": time.perf_counter() - t0}
            save_checkpoint(init, state_dict=state, model_config=child_cfg, lineage=lineage)
        dist.barrier()
    return load_checkpoint(init)


def stage_spec(cfg: RunConfig, stage: Stage, samples: int) -> StageSpec:
    """`stage`'s settings resolved once from the run config (`samples` training pairs per epoch)."""
    parent = None if stage.from_scratch else get_model_config(cfg.chain[stage.index - 1].model)
    return resolve_spec(model=get_model_config(stage.member.model), member=stage.member, train=cfg.train,
                        from_scratch=stage.from_scratch, parent=parent, samples=samples,
                        captions=cfg.data.captions_per_image)


def run_stage(run_dir: Path, cfg: RunConfig, stage: Stage, state: RunState,
              evaluate: Callable[[ModelConfig], Callable[[torch.nn.Module], dict[str, float]]] | None,
              dataset_for: Callable[[ModelConfig], Any], progress: bool) -> dict[str, Any]:
    """Grow (if needed) and train one stage; returns its stored result."""
    from compt.train import load_result, train_stage

    d = run_dir / stage.directory
    done = load_result(d)
    if done is not None:
        state.set(stage.key, "done")
        return done.to_dict()
    state.set(stage.key, "running")
    model_cfg = get_model_config(stage.member.model)
    dataset = dataset_for(model_cfg)
    spec = stage_spec(cfg, stage, len(dataset))
    init, teacher, lineage = None, None, {"stage": stage.key, "kind": stage.kind, "run": run_dir.name}
    if spec.parent is not None:
        parent_ckpt = run_dir / stage_dir("chain", stage.index - 1, cfg.chain[stage.index - 1].model) / "final.pt"
        parent, parent_sha = load_checkpoint(parent_ckpt).state_dict, sha256_file(parent_ckpt)
        grown = grow_into(d, parent_ckpt, parent_sha, parent, spec.parent, spec.model, spec.growth, spec.seed)
        init, teacher = grown.state_dict, parent if spec.distills else None
        lineage.update(parent=str(parent_ckpt), parent_sha256=parent_sha, operator=spec.growth,
                       distill=stage.member.distill, distill_weight=spec.distill_weight,
                       grow_s=float(grown.lineage.get("grow_s", 0.0)))
    lineage.update(epochs=spec.epochs, seed=spec.seed, model=spec.model.name)
    write_json(d / "lineage.json", {**lineage, "fingerprint": fingerprint(cfg, stage), "spec": spec.summary()})
    torch.manual_seed(spec.seed)
    try:
        result = train_stage(spec, out_dir=d, dataset=dataset, init_state=init, teacher_state=teacher,
                             evaluate=evaluate(model_cfg) if evaluate else None, lineage=lineage, progress=progress)
    except BaseException:
        state.set(stage.key, "failed")
        raise
    state.set(stage.key, "done")
    return result.to_dict()


def train_chain(cfg: RunConfig, run_dir: str | Path, *, baselines: bool | None = None,
                from_stage: str | None = None, progress: bool = True) -> dict[str, dict[str, Any]]:
    """Run every stage of `cfg` in `run_dir` (resuming finished work); returns results by stage key."""
    from compt.data import build_eval_suite, build_train_dataset, evaluate

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    dist.check_shared_dir(run_dir)  # multi-node: every rank reads what rank 0 writes here
    cfg = replace(cfg, baselines=cfg.baselines if baselines is None else baselines)
    stages = plan_stages(cfg, cfg.baselines)
    check_or_reset(run_dir, cfg, stages, from_stage)
    if dist.is_main():
        (run_dir / "config.toml").write_text(tomli_w.dumps(config_to_dict(cfg)))
    state = RunState(run_dir, stages, cfg.name)
    datasets: dict[tuple, Any] = {}

    def dataset_for(model_cfg: ModelConfig) -> Any:
        key = (model_cfg.vision.image_size, model_cfg.text.context_length)
        if key not in datasets:
            datasets[key] = build_train_dataset(cfg.data, model_cfg)
        return datasets[key]

    def evaluator(model_cfg: ModelConfig) -> Callable[[torch.nn.Module], dict[str, float]]:
        suite = build_eval_suite(cfg.data, model_cfg)
        return lambda model: evaluate(model, suite)

    results = {}
    for stage in stages:
        results[stage.key] = run_stage(run_dir, cfg, stage, state, evaluator, dataset_for, progress)
    return results
