"""Run a whole CoM-PT chain (and optionally the individual baselines) from a run config.

The run directory is the single source of truth::

    RUN/config.toml                 resolved config (what was asked)
    RUN/run.json                    stage states: pending / running / done / interrupted / failed; threads
    RUN/.compt.lock                 held by the run in progress (`compt.runlock`)
    RUN/chain/01-<model>/           member 1, trained from scratch
    RUN/chain/0i-<model>/init.pt    member i grown (or pruned: prune.json beside it) from member i-1's final.pt
    RUN/chain/0i-<model>/…          final.pt, last.pt, metrics.jsonl, result.json, lineage.json
    RUN/baselines/<model>/          every member trained alone for the individual schedule

Re-running the same command skips finished stages and resumes an interrupted one from its last.pt. Each stage
records a fingerprint of the settings it depends on; a finished stage whose settings changed is refused
(or rerun with ``from_stage``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import tomli_w
import torch

from compt import distributed as dist
from compt.checkpoint import Checkpoint, atomic_write, atomic_write_json, load_checkpoint, save_checkpoint, sha256_file
from compt.config import MemberConfig, RunConfig, TrainConfig, config_to_dict, resolved_member
from compt.errors import Interrupted, Stopped, UserError
from compt.fingerprints import later_settings, only_set, own_settings, settings_changes, without_unfingerprinted
from compt.inherit import inherit, parse_inherit
from compt.paradigm import Paradigm, RunData, chain_rules
from compt.parity import RECORD, median_target, resolve_parity
from compt.perturb import FRESH_SEED_OFFSET, noise_seed, shrink_perturb, snr_noise
from compt.runlock import run_lock
from compt.signals import interrupt_on_signals
from compt.stage import StageSpec, resolve_spec
from compt.threads import configure_threads


@dataclass(frozen=True)
class Stage:
    """One unit of work: a chain member (grown + distilled, or from scratch) or an individual baseline."""

    key: str                 # "chain-1", "baseline-3", "baseline-3-seed1"
    kind: str                # "chain" | "baseline"
    index: int               # member index in the chain (0-based)
    member: MemberConfig
    directory: str           # relative to the run directory
    seed: int | None = None  # a baseline trained on another train seed than the run's (`compt.parity`)

    @property
    def from_scratch(self) -> bool:
        return self.kind == "baseline" or self.index == 0


def slug(model: str) -> str:
    return model.replace("/", "_")


def stage_dir(kind: str, index: int, model: str, seed_suffix: str = "") -> str:
    """A stage's folder, relative to the run directory: ``chain/0i-<model>`` or ``baselines/<model>`` (another
    seed's baseline: ``baselines/<model>-seed<s>``)."""
    return f"chain/{index + 1:02d}-{slug(model)}" if kind == "chain" else f"baselines/{slug(model)}{seed_suffix}"


def plan_stages(cfg: RunConfig, baselines: bool) -> list[Stage]:
    """Chain stages in order, then the baselines that are not already a chain stage (each on every seed of
    `compt.parity`) — or, when a member stops at its baseline (``until = "baseline"``), member 1, the baselines,
    then the grown members.

    Member 1's baseline *is* chain stage 1 when the individual schedule equals member 1's epochs
    (same model, data, seed, schedule), so it is trained once and reported in both roles.
    """
    chain = [Stage(f"chain-{i + 1}", "chain", i, m, stage_dir("chain", i, m.model)) for i, m in enumerate(cfg.chain)]
    seeds = resolve_parity(cfg).seeds
    alone = [individual_stage(cfg, i, seed) for i in range(len(cfg.chain)) for seed in seeds
             if i > 0 or seed != seeds[0] or not _member1_is_baseline(cfg)] if baselines else []
    if any(m.until == "baseline" for m in cfg.chain):
        return [chain[0], *alone, *chain[1:]]
    return [*chain, *alone]


def individual_stage(cfg: RunConfig, index: int, seed: int | None = None) -> Stage:
    """Member `index` trained alone for the individual schedule (its baseline), on train seed `seed` (default
    the run's); under the time-to-target protocol on the stopping schedule, probing without stopping."""
    m, parity = cfg.chain[index], resolve_parity(cfg)
    member = cfg.paradigm.member_options(model=m.model, epochs=cfg.individual_epochs)
    if parity.symmetric:
        member = replace(member, until=RECORD, probe_every=parity.probe_every)
    other = seed is not None and seed != cfg.train.seed
    suffix = f"-seed{seed}" if other else ""
    return Stage(f"baseline-{index + 1}{suffix}", "baseline", index, member,
                 stage_dir("baseline", index, m.model, suffix), seed if other else None)


def _member1_is_baseline(cfg: RunConfig) -> bool:
    """Member 1 trains exactly the individual recipe (same epochs, the shared learning rate and schedule, from
    scratch)."""
    m = cfg.chain[0]
    return cfg.individual_epochs == m.epochs and m.lr is None and m.init is None and not resolve_parity(cfg).symmetric


def baseline_dir(cfg: RunConfig, index: int, seed: int | None = None) -> str:
    """Where member `index`'s individual baseline on train seed `seed` (default the run's) lives (chain stage 1
    may double as member 1's)."""
    if index == 0 and seed in (None, cfg.train.seed) and _member1_is_baseline(cfg):
        return stage_dir("chain", index, cfg.chain[index].model)
    return individual_stage(cfg, index, seed).directory


def stage_train(cfg: RunConfig, stage: Stage) -> TrainConfig:
    """The `[train]` settings `stage` trains with: the run's, on the stage's own seed for another seed's
    baseline."""
    return cfg.train if stage.seed is None else replace(cfg.train, seed=stage.seed)


def fingerprint(cfg: RunConfig, stage: Stage) -> dict[str, Any]:
    """The settings a stage's result depends on (for detecting config changes on resume); ``data.validation``
    says when the run's validation split is carved out of the training data, which then depend on it."""
    if stage.from_scratch:  # growth/distillation settings do not touch a from-scratch run
        m = stage.member
        members = [{"model": m.model, "epochs": m.epochs, "warmup_steps": m.warmup_steps, "lr": m.lr,
                    **later_settings(m)}]
    else:  # members resolved: a default decided by the paradigm fingerprints as the value it stands for
        members = [only_set(asdict(resolved_member(m, cfg))) for m in (*cfg.chain[: stage.index], stage.member)]
    carved = "carved" if chain_rules(cfg).carves_validation else None
    fp = {"members": members, "data": only_set({**asdict(cfg.data), "validation": carved}),
          "train": only_set(asdict(stage_train(cfg, stage)))}
    parity = resolve_parity(cfg)
    if stage.member.until == "baseline" and (parity.symmetric or len(parity.seeds) > 1):  # where its target is from
        fp["parity"] = {"protocol": parity.protocol, "seeds": list(parity.seeds)}
    return without_unfingerprinted(fp)


def stage_changes(stored: dict[str, Any], cfg: RunConfig, stage: Stage) -> list[str]:
    """How `stage` under `cfg` differs from a finished stage whose lineage.json stored fingerprint `stored`
    ([] = same settings: its result can stand for this stage's — on resume, or copied from another run)."""
    new = json.loads(json.dumps(fingerprint(cfg, stage), default=str))
    first = stage.index + 1 if stage.from_scratch else 1
    return settings_changes(without_unfingerprinted(own_settings(stored, cfg)), new, first_member=first)


class RunState:
    """`run.json`: per-stage state, written atomically by rank 0."""

    def __init__(self, run_dir: Path, stages: list[Stage], name: str, threads: dict[str, Any]) -> None:
        self.path = run_dir / "run.json"
        try:
            old = json.loads(self.path.read_text()) if self.path.is_file() else {}
        except json.JSONDecodeError:  # damaged (e.g. written on a full disk): the stage folders tell the truth
            old = {}
        prev = {s["key"]: s for s in old.get("stages", [])}
        self.data = {"name": name, "threads": threads, "stages": [
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
    wipe, doomed = False, []
    for s in stages:
        wipe = wipe or s.key == from_stage
        d = run_dir / s.directory
        # later chain members descend from a rerun chain stage; baselines depend on nothing else
        if wipe and (s.key == from_stage or s.kind == keys[from_stage].kind == "chain"):
            doomed.append(d)
            continue
        lineage = d / "lineage.json"
        if not lineage.is_file():
            continue
        recorded = json.loads(lineage.read_text())
        old = recorded.get("fingerprint")
        if old is not None and (changes := "; ".join(stage_changes(old, cfg, s)[:4])):
            raise UserError(f"stage {s.key} ({s.member.model}) was run with other settings ({changes}); "
                            f"use a new run directory or rerun from it with --from-stage {s.key}")
        check_init_unchanged(d, s, recorded)
    dist.barrier()  # every rank has read every lineage.json before rank 0 deletes anything
    for d in doomed:
        if dist.is_main() and d.exists():
            shutil.rmtree(d)
    dist.barrier()


def init_digest(path: str | Path) -> str:
    """sha256 of member 1's `init`: of the file, or for a folder (a Hugging Face model) of its files' relative
    paths and sha256s, in path order."""
    path = Path(path)
    if not path.is_dir():
        return sha256_file(path)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    listing = "".join(f"{p.relative_to(path).as_posix()}\t{sha256_file(p)}\n" for p in files)
    return hashlib.sha256(listing.encode()).hexdigest()


def check_init_unchanged(stage_dir: Path, stage: Stage, lineage: dict[str, Any]) -> None:
    """A started or finished stage that began from `init` (its lineage holds the file's sha256) refuses an init
    that has changed since: its weights descend from the old one."""
    before = lineage.get("init_sha256")
    started = (stage_dir / "last.pt").is_file() or (stage_dir / "result.json").is_file()
    if not (stage.member.init and before and started and Path(stage.member.init).exists()):
        return
    if init_digest(stage.member.init) != before:
        raise UserError(f"init {stage.member.init} has changed since stage {stage.key} ({stage.member.model}) started "
                        f"from it (sha256 {before[:12]}… then); restore it, or rerun the stage from the new file "
                        f"with --from-stage {stage.key}")


def fresh_state(paradigm: Paradigm, model_cfg: Any, seed: int) -> dict[str, torch.Tensor]:
    """A freshly initialised model's weights, drawn from their own seeded generator: the same weights
    whatever this process drew from the global RNG before (datasets, evaluation suites, earlier stages)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return paradigm.build(model_cfg).state_dict()


def grow_into(stage_dir: Path, parent_name: str, parent_sha256: str, parent_state: dict[str, torch.Tensor],
              spec: StageSpec, paradigm: Paradigm, member: int, dataset: Any = None) -> Checkpoint:
    """Chain member `member`'s (0-based) initial weights grown from the parent's final weights by the stage's
    operator — or pruned from them (``"prune"``: importance measured on a calibration batch of `dataset`, the
    stage's training set, drawn by its seed; the record in ``prune.json`` beside it, `compt.prune`) — then
    moved away from the parent when the member asks (`escape_parent`), written once to ``init.pt`` by rank 0
    (atomically, with the growth time ``grow_s`` in its lineage, so it survives resumes; `parent_name`: the
    parent checkpoint's path relative to the run); every rank waits for the file and reads it."""
    init = stage_dir / "init.pt"
    if not init.is_file():
        if dist.is_main():
            t0, pruned = time.perf_counter(), {}
            if spec.growth == "none":
                state = fresh_state(paradigm, spec.model, spec.seed)
            elif spec.growth == "prune":
                state, pruned = prune_into(stage_dir, parent_state, spec, paradigm, dataset)
            else:
                state = paradigm.grow(parent_state, spec.parent, spec.model, spec.growth, spec.seed)
            state, escape = escape_parent(state, spec, paradigm, member)
            lineage = {"parent": parent_name, "parent_sha256": parent_sha256, "operator": spec.growth,
                       "seed": spec.seed, "stage": "grow", "grow_s": time.perf_counter() - t0, **escape, **pruned}
            save_checkpoint(init, state_dict=state, model_config=spec.model, lineage=lineage)
        dist.barrier()
    return load_checkpoint(init)


def prune_into(stage_dir: Path, parent_state: dict[str, torch.Tensor], spec: StageSpec, paradigm: Paradigm,
               dataset: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(the member's weights pruned from its parent's, what its lineage records of it): the paradigm measures on a
    calibration batch of `dataset` (`compt.prune.calibration_batch`, drawn by the stage's seed) on this rank's
    device; the importance statistics and kept indices go to ``prune.json`` in the stage folder."""
    from compt.prune import as_lists, calibration_batch

    batch = calibration_batch(dataset, spec.seed)
    state, record = paradigm.prune(parent_state, spec.parent, spec.model, batch, dist.init_distributed().device)
    atomic_write_json(stage_dir / "prune.json", {"parent": spec.parent.name, "child": spec.model.name,
                                                 "calibration_samples": len(batch[0]), "seed": spec.seed,
                                                 **as_lists(record)})
    return {k: v.detach().cpu() for k, v in state.items()}, {"prune_record": "prune.json",
                                                               "calibration_samples": len(batch[0])}


def escape_parent(state: dict[str, torch.Tensor], spec: StageSpec, paradigm: Paradigm,
                  member: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(the grown `state` after the member's escape options, the options that were on — for the lineage), in
    this order: noise at ``spec.snr_db`` (`compt.perturb.snr_noise`, seeded by the train seed and `member`),
    partial inheritance (`compt.inherit`: the parts not kept are the fresh init at the stage's seed, the
    member's ``growth = "none"`` start, so only inherited tensors keep their noise), then shrink and perturb
    (`compt.perturb.shrink_perturb`, on every tensor). Every option at its default returns `state` itself."""
    on: dict[str, Any] = {}
    if spec.snr_db is not None:
        on["snr_db"] = spec.snr_db
        state = snr_noise(state, spec.snr_db, torch.Generator().manual_seed(noise_seed(spec.seed, member)))
    if spec.inherit != "all":
        on["inherit"] = spec.inherit
        state = inherit(state, fresh_state(paradigm, spec.model, spec.seed), parse_inherit(spec.inherit),
                        lambda key: paradigm.key_place(spec.model, key))
    if (spec.shrink, spec.perturb) != (1.0, 0.0):
        on.update(shrink=spec.shrink, perturb=spec.perturb)
        fresh = fresh_state(paradigm, spec.model, spec.seed + FRESH_SEED_OFFSET)
        state = shrink_perturb(state, fresh, shrink=spec.shrink, perturb=spec.perturb)
    return state, on


def member_config(cfg: RunConfig, index: int) -> Any:
    """The model config of chain member `index` as this run trains it, as its paradigm resolved it for the run
    (`compt.paradigm.ChainRules.configs`: e.g. a CLIP config with the learnable logit bias when the objective is
    SigLIP, a language model's vocabulary resized to hold the run's tokenizer)."""
    return chain_rules(cfg).configs[index]


def stage_spec(cfg: RunConfig, stage: Stage, samples: int) -> StageSpec:
    """`stage`'s settings resolved once from the run config (`samples` training samples per epoch)."""
    parent = None if stage.from_scratch else member_config(cfg, stage.index - 1)
    return resolve_spec(model=member_config(cfg, stage.index), member=resolved_member(stage.member, cfg),
                        train=stage_train(cfg, stage), from_scratch=stage.from_scratch, parent=parent, samples=samples,
                        captions=cfg.data.caption_slots, paradigm=cfg.paradigm)


def run_stage(run_dir: Path, cfg: RunConfig, stage: Stage, state: RunState, data: RunData,
              progress: bool, data_fingerprint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Grow (if needed) and train one stage of any paradigm; returns its stored result. `data_fingerprint`
    (`check_same_data`) is recorded in the stage's lineage. From the moment the stage is marked running, anything
    that ends it early marks it interrupted (a stop signal, wherever it lands) or failed."""
    from compt.train import load_result

    done = load_result(run_dir / stage.directory)  # with final.pt verified against the size and sha256 recorded
    if done is not None:
        state.set(stage.key, "done")
        return record_parent_distance(run_dir, cfg, stage, data, done).to_dict()
    state.set(stage.key, "running")
    try:
        result = _grow_and_train(run_dir, cfg, stage, data, progress, data_fingerprint)
        result = record_parent_distance(run_dir, cfg, stage, data, result)
    except BaseException as e:  # a requested stop resumes like any other: it did not fail
        stopped = isinstance(e, (Interrupted, Stopped, KeyboardInterrupt))
        state.set(stage.key, "interrupted" if stopped else "failed")
        raise
    state.set(stage.key, "done")
    return result.to_dict()


def _grow_and_train(run_dir: Path, cfg: RunConfig, stage: Stage, data: RunData, progress: bool,
                    data_fingerprint: dict[str, Any] | None) -> Any:
    """`run_stage`'s work: the stage's initial weights (fresh, `init`, or grown into ``init.pt``), its lineage.json,
    then `compt.train.train_stage`; returns its `StageResult`."""
    from compt.train import train_stage

    d = run_dir / stage.directory
    paradigm = cfg.paradigm
    model_cfg = member_config(cfg, stage.index)
    dataset = data.train_set(model_cfg)
    spec = stage_spec(cfg, stage, len(dataset))
    if spec.until == "baseline":
        spec = replace(spec, target=baseline_target(run_dir, cfg, stage, data))
    init, teacher, lineage = None, None, {"stage": stage.key, "kind": stage.kind, "run": run_dir.name}
    start = stage.member.init if stage.kind == "chain" else None   # member 1 from an existing model
    if start:   # its sha256: a resume refuses an init file replaced since (`check_init_unchanged`)
        lineage.update(init=str(Path(start).resolve()), init_sha256=init_digest(start))
    if spec.parent is None and not (d / "last.pt").is_file():
        init = paradigm.load_init(Path(start), spec.model) if start else fresh_state(paradigm, spec.model, spec.seed)
    if spec.parent is not None:
        parent_ckpt = run_dir / stage_dir("chain", stage.index - 1, cfg.chain[stage.index - 1].model) / "final.pt"
        parent, parent_sha = load_checkpoint(parent_ckpt).state_dict, sha256_file(parent_ckpt)
        parent_name = str(parent_ckpt.relative_to(run_dir))
        grown = grow_into(d, parent_name, parent_sha, parent, spec, paradigm, stage.index, dataset)
        init, teacher = grown.state_dict, parent if spec.distills else None
        lineage.update(parent=parent_name, parent_sha256=parent_sha, operator=spec.growth,
                       distill=spec.distill, distill_weight=spec.distill_weight,
                       grow_s=float(grown.lineage.get("grow_s", 0.0)))
    lineage.update(epochs=spec.epochs, seed=spec.seed, model=spec.model.name, threads=torch.get_num_threads(),
                   data=data_fingerprint, **data.lineage())
    write_json(d / "lineage.json", {**lineage, "fingerprint": fingerprint(cfg, stage), "spec": spec.summary()})
    evaluate_fn = data.evaluator(model_cfg)
    dist.seed_rank(spec.seed, dist.init_distributed())  # after the data: the stage's RNG stream does not depend
    # on it either; one stream per rank (rank 0's is `spec.seed`'s), restored per rank on resume
    return train_stage(spec, out_dir=d, dataset=dataset, init_state=init, teacher_state=teacher,
                       evaluate=evaluate_fn, lineage=lineage, progress=progress, unfinished=True,
                       validate=data.validator(model_cfg) if spec.until else None,
                       after_final=lambda out, weights: data.after_final(out, spec.model, weights))


def baseline_target(run_dir: Path, cfg: RunConfig, stage: Stage, data: RunData) -> dict[str, float]:
    """The target of a member that stops at its baseline: its baselines' final headline metrics on the
    validation split (`validation_metrics`) that the run's data measures (`compt.paradigm.ChainRules.measured`),
    the median over the parity seeds (`compt.parity`); every one of those baselines must have finished."""
    per_seed = [validation_metrics(run_dir, cfg, stage.index, data, seed) for seed in resolve_parity(cfg).seeds]
    return median_target(per_seed, list(chain_rules(cfg).measured(cfg.paradigm.metrics)))


def validation_metrics(run_dir: Path, cfg: RunConfig, index: int, data: RunData,
                       seed: int | None = None) -> dict[str, float]:
    """Member `index`'s baseline (on train seed `seed`, default the run's) evaluated on the validation split,
    computed once from its final.pt and kept in its result.json (``validation``; rank 0 writes)."""
    from compt.train import load_result

    d = run_dir / baseline_dir(cfg, index, seed)
    if load_result(d, verify=False) is None:
        raise UserError(f"member {index + 1} ({cfg.chain[index].model}) stops at its baseline, but the baseline "
                        f"({d}) has not finished; train the run with its baselines")
    raw = json.loads((d / "result.json").read_text())
    if "validation" not in raw:
        paradigm, model_cfg = cfg.paradigm, member_config(cfg, index)
        device = dist.init_distributed().device
        model = paradigm.create(model_cfg, load_checkpoint(d / "final.pt").state_dict).to(device).eval()
        with torch.no_grad():
            raw["validation"] = {k: float(v) for k, v in data.validator(model_cfg)(model).items()}
        write_json(d / "result.json", raw)
        dist.barrier()
    return raw["validation"]


def check_same_data(run_dir: Path, stages: list[Stage], data: RunData) -> dict[str, Any]:
    """The data's fingerprint (`compt.datafp`), taken before any data is built; a stage that will resume from its
    last.pt refuses data that changed since it started (files added, removed, resized or with edited captions
    or text), naming what changed."""
    from compt.datafp import data_changes

    now = data.fingerprint()
    for stage in stages:
        d = run_dir / stage.directory
        if not ((d / "last.pt").is_file() and (d / "lineage.json").is_file()) or (d / "result.json").is_file():
            continue
        before = json.loads((d / "lineage.json").read_text()).get("data")
        if before is not None and (changes := data_changes(before, now)):
            raise UserError(f"stage {stage.key} ({stage.member.model}) started on other data: "
                            f"{'; '.join(changes[:3])}{' …' if len(changes) > 3 else ''}; restore the data, or "
                            f"rerun the stage with --from-stage {stage.key}")
    return now


def record_parent_distance(run_dir: Path, cfg: RunConfig, stage: Stage, data: RunData, result: Any) -> Any:
    """A finished grown stage's distance from its parent (`compt.diagnostics`), computed once from the
    parent's final.pt and the stage's init.pt and final.pt and added to its result.json (rank 0 writes);
    `result` as it is for a stage trained from scratch, one already recorded, or one whose files are gone."""
    from compt.diagnostics import parent_distance

    d = run_dir / stage.directory
    parent_ckpt = run_dir / stage_dir("chain", stage.index - 1, cfg.chain[stage.index - 1].model) / "final.pt"
    files = (parent_ckpt, d / "init.pt", d / "final.pt")
    if stage.from_scratch or result.diagnostics or not all(f.is_file() for f in files):
        return result
    paradigm = cfg.paradigm
    parent_cfg, child_cfg = member_config(cfg, stage.index - 1), member_config(cfg, stage.index)
    parent, start, end = (load_checkpoint(f).state_dict for f in files)
    result.diagnostics = parent_distance(paradigm, data, parent_cfg=parent_cfg, parent=parent,
                                         child_cfg=child_cfg, start=start, end=end)
    raw = json.loads((d / "result.json").read_text())
    write_json(d / "result.json", {**raw, "diagnostics": result.diagnostics})
    dist.barrier()
    return result


@contextmanager
def run_session(cfg: RunConfig, run_dir: Path) -> Iterator[dict[str, Any]]:
    """What every run holds for its whole length: the distributed group, the torch thread count (set once,
    `compt.threads`, yielded to be recorded in run.json and every stage's lineage) and the run directory's
    lock (`compt.runlock`), and a stop signal raises `compt.errors.Stopped` wherever it lands (`compt.signals`;
    the training loop handles its own)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    dist.init_distributed()
    dist.check_shared_dir(run_dir)  # multi-node: every rank reads what rank 0 writes here
    threads = configure_threads(cfg.train.threads)
    with interrupt_on_signals("nothing finished is lost — run the same command again to resume"), run_lock(run_dir):
        yield threads


def prepare_run(cfg: RunConfig, run_dir: Path, baselines: bool | None, from_stage: str | None,
                threads: dict[str, Any]) -> tuple[RunConfig, list[Stage], RunState]:
    """Resolve `baselines`, plan the stages, check/reset finished ones, write config.toml and run.json
    (inside `run_session`)."""
    cfg = replace(cfg, baselines=cfg.baselines if baselines is None else baselines)
    stages = plan_stages(cfg, cfg.baselines)
    check_or_reset(run_dir, cfg, stages, from_stage)
    if dist.is_main():
        text = tomli_w.dumps(config_to_dict(cfg))
        atomic_write(run_dir / "config.toml", lambda f: f.write(text.encode()))
    return cfg, stages, RunState(run_dir, stages, cfg.name, threads)


def train_run(cfg: RunConfig, run_dir: str | Path, *, baselines: bool | None = None,
              from_stage: str | None = None, progress: bool = True) -> dict[str, dict[str, Any]]:
    """Run every stage of `cfg` in `run_dir`, any paradigm (resuming finished work); results by stage key.
    The entry point of ``compt train`` and ``compt demo``."""
    run_dir = Path(run_dir)
    with run_session(cfg, run_dir) as threads:
        cfg, stages, state = prepare_run(cfg, run_dir, baselines, from_stage, threads)
        for note in chain_rules(cfg).notes:
            dist.say(note)
        data = cfg.paradigm.open_data(cfg, run_dir)
        fingerprint = check_same_data(run_dir, stages, data)
        preflight(run_dir, cfg, stages, data)
        return {s.key: run_stage(run_dir, cfg, s, state, data, progress, fingerprint) for s in stages}


def preflight(run_dir: Path, cfg: RunConfig, stages: list[Stage], data: RunData) -> None:
    """Build the first unfinished stage's training set and evaluation before any stage trains, so that
    data problems (bad files, an evaluation split that cannot be made, a batch larger than the data) stop
    the run before work is done rather than after a stage trained; the same for an unwritable
    ``train.teacher_cache_dir`` (`check_teacher_cache_dir`)."""
    from compt.train import load_result

    pending = [s for s in stages if load_result(run_dir / s.directory, verify=False) is None]
    if not pending:
        return
    check_teacher_cache_dir(cfg.train.teacher_cache_dir)
    model_cfg = member_config(cfg, pending[0].index)
    n = len(data.train_set(model_cfg))
    if cfg.train.batch_size > n:
        raise UserError(f"train.batch_size {cfg.train.batch_size} is larger than the training set ({n} "
                        f"samples): one step would see samples twice; lower train.batch_size")
    data.evaluator(model_cfg)
    for stage in pending:  # a member that stops needs its validation split
        if stage.member.until or stage.member.target:
            data.validator(member_config(cfg, stage.index))


def check_teacher_cache_dir(folder: str) -> None:
    """``train.teacher_cache_dir``, when set, is a folder this process can create files in (checked on every rank,
    each on its own node's disk), before any stage trains."""
    import tempfile

    if not folder:
        return
    path = Path(folder).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise UserError(f"train.teacher_cache_dir {path} cannot be written ({e.strerror or e}); set it to a writable "
                        f"node-local folder, or to \"\" to keep teacher caches in the stage folders") from None
