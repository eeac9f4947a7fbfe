"""Run configs: one TOML format for `compt plan`, `compt train` and `compt report`.

A run config is data (frozen dataclasses); the CLI loads a TOML file and applies a few typed
``key=value`` overrides (``train.lr=3e-4``, ``chain.2.epochs=4``, ``data.num_samples=2000``)::

    name = "paper-cc3m-vit"
    baseline_epochs = 128           # the individual (baseline) schedule, per member
    baselines = false               # also train every member individually

    [data]
    kind = "synthetic"              # any kind of `compt.clip.data.ADAPTERS`
    num_samples = 2_890_000         # for planning when the data is not local
    captions_per_image = 7

    [train]
    batch_size = 1024
    lr = 1e-3

    [[chain]]
    model = "paper/ViT-T-16"
    epochs = 128
    [[chain]]
    model = "paper/ViT-S-16"
    epochs = 24
    growth = "preserve"
    distill = "fd"
    distill_weight = 500.0
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from compt.errors import UserError, unknown_name
from compt.fields import coerce, parse_scalar
from compt.paradigm import ChainRules, Metric, Paradigm, chain_rules, paradigm_for_run, paradigms
from compt.parity import validate_parity
from compt.settings import DataConfig, MemberConfig, check_range

DISTILL_SCHEDULES = ("constant", "linear", "cosine")   # how a member's α evolves over its stage
SCHEDULES = ("cosine", "wsd")                         # a member's lr schedule (`compt.train.optim`)
COOLDOWN_SHAPES = ("linear", "sqrt")                  # a wsd schedule's cooldown
UNTIL = ("baseline",)                                 # a grown member's stopping rule (`compt.train.stopping`)

REPORT_TO = ("tensorboard", "wandb")
__all__ = ["DataConfig", "MemberConfig", "RunConfig", "TrainConfig", "config_from_dict", "config_to_dict",
           "load_config", "validate"]


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Optimiser, schedule and loop settings shared by every stage (paper defaults)."""

    batch_size: int = 1024             # global batch (split over ranks)
    lr: float = 1e-3
    min_lr: float = 3e-6               # cosine floor
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    warmup_steps: int = 8000           # from-scratch runs (member 1, baselines)
    stage_warmup_steps: int = 1000     # grown chain stages
    grad_clip: float = 0.0             # 0 = off
    accum_steps: int = 1
    precision: str = "auto"            # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16
    seed: int = 0
    teacher_cache: bool = True         # cache teacher embeddings when the teacher's input is deterministic
    ckpt_every_steps: int = 0          # 0 = only at epoch ends
    eval_every_epochs: float = 0       # 0 = only at the end of each stage; may be a fraction of an epoch
    log_every_steps: int = 10
    fsdp: bool = False                 # shard members with FSDP2 instead of DDP
    loader_workers: int = -1           # DataLoader worker processes per rank (-1 = CPUs per rank - 1, ≤ 8; 0 = none)
    teacher_cache_mem_gb: float = 4.0  # teacher caches larger than this are memory-mapped under the stage folder
    teacher_cache_dir: str = ""        # absolute node-local folder for memory-mapped teacher caches ("" = the
                                       # stage folder); a stage's cache is deleted once its result is written
    threads: int = 0                   # torch threads per process (0 = automatic, see compt.threads)
    report_to: tuple[str, ...] = ("tensorboard",)  # metric sinks besides metrics.jsonl: tensorboard, wandb
    wandb_project: str = "compt"       # W&B project of the stages' runs (with "wandb" in report_to)
    objective: str | None = None       # None / "clip": InfoNCE | "siglip": sigmoid loss + logit bias (clip.siglip)
    compile: bool = False              # torch.compile each transformer block of the student


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    name: str
    chain: tuple[MemberConfig, ...]
    baseline_epochs: float = 0         # individual schedule for every member (0 = same as member 1's epochs)
    baselines: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    parity_protocol: str = "baseline-curve"  # how parity is measured (compt.parity): baseline-curve (targets from
                                             # the baselines' final metrics, their cost read off their curves) |
                                             # time-to-target (baselines train under the members' stopping rule)
    target_seeds: int | None = None          # baseline seeds whose median validation metrics are the targets
                                             # (default 1; time-to-target: 3, at least 2)
    baseline_probe_every: float | None = None  # time-to-target: epochs between a baseline's probes (default: a
                                               # quarter of baseline_epochs, a stopping member's default cadence)

    @property
    def individual_epochs(self) -> float:
        return self.baseline_epochs or self.chain[0].epochs

    @functools.cached_property
    def paradigm(self) -> Paradigm:
        """The run's one paradigm (`compt.paradigm.paradigm_for_run`), resolved on first use and held."""
        return paradigm_for_run(self)


# ----------------------------------------------------------------------------------------------- parsing
def _table(where: str) -> str:
    """A table's name in messages: ``[chain.1] (member 2)`` — the key is the 0-based list index overrides use,
    members are named 1-based as in every other message."""
    if where.startswith("chain.") and where[6:].isdigit():
        return f"[{where}] (member {int(where[6:]) + 1})"
    return f"[{where or 'run'}]"


OPTIONS = {"data": ("data_options", "[data]"), "chain": ("member_options", "[[chain]]")}   # table → its
# paradigm's class (`compt.paradigm.Paradigm`) and its name in messages


@dataclass(frozen=True)
class _Tables:
    """What a run config's tables parse into: `[data]` and each `[[chain]]` member as the run's paradigm's
    `data_options` and `member_options` (the shared classes while the paradigm is unknown); `stored`: a run
    directory's config.toml, which older versions wrote with every paradigm's keys, so another paradigm's keys
    are dropped there instead of refused."""

    paradigm: Paradigm | None = None
    stored: bool = False

    def cls(self, table: str) -> type:
        return getattr(self.paradigm, OPTIONS[table][0]) if self.paradigm else (
            DataConfig if table == "data" else MemberConfig)

    def foreign(self, where: str, unknown: set[str]) -> set[str]:
        """The `unknown` keys of table `where` that another paradigm declares: dropped from a stored config; in any
        other, the first is a one-line `UserError` naming its paradigm."""
        table = where.split(".")[0]
        if self.paradigm is None or not unknown or table not in OPTIONS:
            return set()
        member, name = OPTIONS[table]
        owners: dict[str, list[str]] = {}
        for p in paradigms(installed=True):
            for key in {f.name for f in dataclasses.fields(getattr(p, member))} & unknown:
                owners.setdefault(key, []).append(f"{p.label}s (paradigm {p.name})")
        if owners and not self.stored:
            key = sorted(owners)[0]
            known = ", ".join(f.name for f in dataclasses.fields(self.cls(table)))
            raise UserError(f"{key} in {_table(where)} is a setting of {', '.join(owners[key])}; this chain's "
                            f"models are {self.paradigm.label}s (their {name} keys: {known})")
        return set(owners)


def _run_paradigm(raw: dict[str, Any]) -> Paradigm | None:
    """The paradigm of a raw run config's chain (`compt.paradigm.paradigm_for_run`: an unknown model or a mixed
    chain is a `UserError` here); None while the chain has no model names to ask about (its error comes later)."""
    chain = raw.get("chain")
    if not (isinstance(chain, list) and chain and all(isinstance(m, dict) and isinstance(m.get("model"), str)
                                                       for m in chain)):
        return None
    return paradigm_for_run(types.SimpleNamespace(chain=[types.SimpleNamespace(model=m["model"]) for m in chain]))


def _build(cls: type, raw: dict[str, Any], where: str, tables: _Tables) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(raw) - fields
    unknown -= tables.foreign(where, unknown)
    if unknown:
        key = sorted(unknown)[0]
        raise unknown_name(f"key in {_table(where)}" if where else "top-level key", key, fields)
    kwargs = {}
    for name, value in raw.items():
        if name not in fields:
            continue
        if name in ("data", "train") and cls is RunConfig:
            sub = tables.cls("data") if name == "data" else TrainConfig
            if not isinstance(value, dict):
                raise UserError(f"[{name}] must be a table")
            kwargs[name] = _build(sub, value, name, tables)
        elif name == "chain" and cls is RunConfig:
            if not isinstance(value, list) or not value:
                raise UserError("the run config needs a non-empty [[chain]] list of members")
            member = tables.cls("chain")
            kwargs[name] = tuple(_build(member, m, f"chain.{i}", tables) for i, m in enumerate(value))
        else:
            kwargs[name] = coerce(value, hints[name], f"{where}.{name}" if where else name)
    if cls is RunConfig and "data" not in kwargs:
        kwargs["data"] = tables.cls("data")()
    try:
        return cls(**kwargs)
    except TypeError as e:
        missing = str(e).split("argument")[-1].strip() if "missing" in str(e) else str(e)
        raise UserError(f"{_table(where)} is missing required key {missing}") from None


def config_from_dict(raw: dict[str, Any], *, stored: bool = False) -> RunConfig:
    """The run config of a raw TOML dict, `[data]` parsed by the chain's paradigm (`Paradigm.data_options`);
    `stored`: a run directory's config.toml (keys an older version wrote for another paradigm are dropped)."""
    tables = _Tables(_run_paradigm(raw), stored)
    cfg = _build(RunConfig, raw, "", tables)
    if tables.paradigm is not None:
        cfg.__dict__["paradigm"] = tables.paradigm   # `RunConfig.paradigm`, resolved once: already here
    return cfg


def read_run_config(run_dir: str | Path) -> RunConfig:
    """The resolved config a run directory holds (``RUN/config.toml``, written by `compt.chain.prepare_run`)."""
    path = Path(run_dir) / "config.toml"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a compt run directory (no config.toml); run `compt train` first")
    return config_from_dict(tomllib.loads(path.read_text()), stored=True)


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """Plain dict (TOML-serialisable: None values dropped) of a run config."""
    def clean(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items() if v is not None}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x
    return clean(dataclasses.asdict(cfg))


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` / ``chain.1.epochs=4`` overrides to a raw config dict (typed later by `_build`)."""
    import copy

    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node: Any = raw
        for i, p in enumerate(parts[:-1]):
            if isinstance(node, list):
                if not p.isdigit() or int(p) >= len(node):
                    raise UserError(f"override {key!r}: no chain member {p!r} (the chain has {len(node)})")
                node = node[int(p)]
            else:
                node = node.setdefault(p, {} if not parts[i + 1].isdigit() else [])
        leaf = parts[-1]
        if isinstance(node, list):
            raise UserError(f"override {key!r} must name a field of a chain member, e.g. chain.1.epochs")
        node[leaf] = parse_scalar(value)
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a TOML run config, apply overrides, type-check and validate it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"run config not found: {path}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: invalid TOML: {e}") from None
    raw.setdefault("name", path.stem)
    cfg = config_from_dict(apply_overrides(raw, overrides or []))
    validate(cfg)
    return cfg


# ----------------------------------------------------------------------------------------------- checks
MAX_EPOCHS = 1e6   # epochs of one stage or baseline; more is a typo (1e300 would overflow the step count)
MAX_PROBES = 1_000   # stopping probes of one member (epochs / probe_every): each costs a cooldown and a validation


def _validate_stage_schedule(i: int, m: MemberConfig, train: TrainConfig, has_patches: bool) -> None:
    """A member's numbers: finite (NaN passes every comparison), epochs in (0, MAX_EPOCHS], a peak lr at or
    above train.min_lr, known schedules."""

    where = f"chain member {i + 1} ({m.model})"
    for f in dataclasses.fields(m):
        value = getattr(m, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{where}: {f.name} must be a finite number, got {value}")
    if m.init is not None and i > 0:
        raise UserError(f"{where}: init starts member 1 from a checkpoint; later members are grown from their parent")
    if m.init is not None and not Path(m.init).exists():
        raise UserError(f"{where}: init {m.init} does not exist")
    as_is = m.init is not None and m.epochs == 0
    if not (0 < m.epochs <= MAX_EPOCHS or as_is):
        raise UserError(f"{where}: epochs must be positive (0 only with init: use the checkpoint as it is) and at "
                        f"most {MAX_EPOCHS:,.0f}, got {m.epochs}")
    if m.lr is not None and m.lr <= 0:
        raise UserError(f"{where}: lr must be positive, got {m.lr}")
    if m.lr is not None and m.lr < train.min_lr:
        raise UserError(f"{where}: lr {m.lr:g} is below train.min_lr {train.min_lr:g} (the schedule decays from the "
                        f"peak lr down to min_lr)")
    if m.distill_weight < 0 or (m.warmup_steps is not None and m.warmup_steps < 0):
        raise UserError(f"{where}: distill_weight and warmup_steps must not be negative, got {m.distill_weight} "
                        f"and {m.warmup_steps}")
    m.check(where, has_patches)   # the paradigm's own keys (`Paradigm.member_options`)
    if m.decay_fraction is not None and not 0 < m.decay_fraction <= 1:
        raise UserError(f"{where}: decay_fraction must be in (0, 1], got {m.decay_fraction}")
    if m.distill_schedule is not None and m.distill_schedule not in DISTILL_SCHEDULES:
        raise unknown_name("distillation schedule", m.distill_schedule, DISTILL_SCHEDULES)
    if m.schedule is not None and m.schedule not in SCHEDULES:
        raise unknown_name("lr schedule", m.schedule, SCHEDULES)
    if m.cooldown_shape is not None and m.cooldown_shape not in COOLDOWN_SHAPES:
        raise unknown_name("cooldown shape", m.cooldown_shape, COOLDOWN_SHAPES)
    if m.cooldown_shape is not None and m.schedule != "wsd" and m.until is None and m.target is None:
        raise UserError(f"{where}: cooldown_shape shapes a wsd schedule's cooldown; set schedule = \"wsd\"")
    if m.shrink is not None and not 0 < m.shrink <= 1:
        raise UserError(f"{where}: shrink must be in (0, 1] (1: the grown weights as they are), got {m.shrink}")
    if m.perturb is not None and m.perturb < 0:
        raise UserError(f"{where}: perturb must not be negative, got {m.perturb}")
    escapes = [k for k in ("shrink", "perturb", "snr_db", "inherit") if getattr(m, k) is not None]
    if escapes and (i == 0 or m.growth == "none"):
        why = "the first member trains from scratch" if i == 0 else "its growth is none"
        verb = "acts" if len(escapes) == 1 else "act"
        raise UserError(f"{where}: {'/'.join(escapes)} {verb} on grown weights; this member is not grown ({why})")
    _validate_stopping(where, i, m)


def _validate_stopping(where: str, i: int, m: MemberConfig) -> None:
    """`until` / `target` / `probe_every`: grown members only, one of the two, on a schedule that can stop."""
    if m.until is None and m.target is None:
        if m.probe_every is not None:
            raise UserError(f"{where}: probe_every needs until = \"baseline\" or a target")
        return
    if i == 0:
        raise UserError(f"{where}: until/target stop a grown member; member 1 trains for its epochs")
    if m.until is not None and m.target is not None:
        raise UserError(f"{where}: set until = \"baseline\" or a target, not both")
    if m.until is not None and m.until not in UNTIL:
        raise unknown_name("until", m.until, UNTIL)
    if m.target is not None and not m.target:
        raise UserError(f"{where}: target is empty; name at least one metric, e.g. {{zeroshot_top1 = 40.0}}")
    if m.schedule not in (None, "wsd"):
        raise UserError(f"{where}: until/target need schedule = \"wsd\" (a cosine cannot stop early without "
                        f"losing its decay); leave schedule unset or set it to \"wsd\"")
    if m.decay_fraction == 1:
        raise UserError(f"{where}: until/target probe cooldowns branched from the constant phase; decay_fraction "
                        f"must be below 1 (the default 0.2 cools down over the last 20 %)")
    if m.probe_every is not None and not 0 < m.probe_every <= m.epochs:
        raise UserError(f"{where}: probe_every must be in (0, epochs = {m.epochs:g}], got {m.probe_every}")
    if m.probe_every is not None and m.epochs / m.probe_every > MAX_PROBES:
        raise UserError(f"{where}: probe_every = {m.probe_every:g} would probe {m.epochs / m.probe_every:.3g} times "
                        f"in the cap of {m.epochs:g} epochs; at most {MAX_PROBES:,} probes, so probe_every must be "
                        f"at least {m.epochs / MAX_PROBES:g}")


def _validate_inherit(i: int, m: MemberConfig, towers: tuple[str, ...]) -> None:
    """`inherit` parses (`compt.inherit.parse_inherit`) and names a tower the chain's models have."""
    from compt.inherit import parse_inherit

    if m.inherit is None:
        return
    where = f"chain member {i + 1} ({m.model})"
    try:
        rule = parse_inherit(m.inherit)
    except ValueError as e:
        raise UserError(f"{where}: {e}") from None
    if rule.tower is not None and rule.tower not in towers:
        have = f"towers {', '.join(towers)}" if towers else "no towers to inherit alone"
        raise UserError(f"{where}: inherit = {m.inherit!r} names a tower, but this chain's models have {have} "
                        f"(use all or first:K)")


def validate(cfg: RunConfig) -> None:
    """Every user error we can find before any work starts, as one-line `UserError`s."""

    if not cfg.name.strip() or cfg.name in (".", "..") or "/" in cfg.name or "\\" in cfg.name:
        raise UserError(f"name must be a non-empty folder name (it names the run folder runs/<name>), got "
                        f"{cfg.name!r}")
    for table, got in (("data", cfg.data), *(("chain", m) for m in cfg.chain)):
        want = getattr(cfg.paradigm, OPTIONS[table][0])
        # a plain MemberConfig (built in Python) is a member with none of the paradigm's own keys set
        if not isinstance(got, want) and type(got) is not MemberConfig:
            raise UserError(f"{table} is a {type(got).__name__}; {cfg.paradigm.label}s read their {OPTIONS[table][1]} "
                            f"as {want.__module__}.{want.__qualname__} (the paradigm's {OPTIONS[table][0]})")
    validate_data(cfg.data)
    validate_train(cfg.train)
    if cfg.data.kind == "synthetic" and cfg.train.batch_size > cfg.data.num_samples:
        raise UserError(f"train.batch_size {cfg.train.batch_size} is larger than the training set "
                        f"(data.num_samples = {cfg.data.num_samples}): one step would see samples twice")
    _validate_report_to(cfg.train.report_to)
    if cfg.baselines and cfg.individual_epochs == 0:
        raise UserError("member 1 is used as it is (epochs = 0): set baseline_epochs, the individual schedule of the "
                        "baselines")
    if not 0 <= cfg.baseline_epochs <= MAX_EPOCHS:  # 0: member 1's epochs; NaN fails both comparisons
        raise UserError(f"baseline_epochs must be positive (or 0: member 1's) and at most {MAX_EPOCHS:,.0f}, got "
                        f"{cfg.baseline_epochs}")
    validate_parity(cfg, MAX_PROBES)
    rules = chain_rules(cfg)
    for i, m in enumerate(cfg.chain):
        _validate_stage_schedule(i, m, cfg.train, has_patches=rules.patch_tokens[i])
        _validate_targets(cfg, i, m)
        _validate_measured(cfg, i, m, rules)
        _validate_inherit(i, m, rules.towers)
        distill = resolved_member(m, cfg).distill
        if i > 0 and m.growth not in rules.growth_ops:
            raise unknown_name("growth operator", m.growth, rules.growth_ops)
        if i > 0 and distill not in rules.distill_losses:
            raise unknown_name("distillation loss", distill, rules.distill_losses)
    for i in range(1, len(rules.configs)):
        _validate_step(cfg, rules, i)


def _validate_step(cfg: RunConfig, rules: ChainRules, i: int) -> None:
    """Member i + 1 against its predecessor: a pruned one (growth = "prune") is no larger in any dimension (the
    paradigm's check, first) and cheaper; any other is more expensive. A chain may mix both (`compt.prune`)."""
    a, b, op = rules.configs[i - 1], rules.configs[i], cfg.chain[i].growth
    if op == "prune":
        rules.validate_growth(a, b, op)
    if (rules.flops[i] >= rules.flops[i - 1]) if op == "prune" else (rules.flops[i] <= rules.flops[i - 1]):
        how = ("pruned from but not smaller than", "prune") if op == "prune" else ("not larger than", "grow")
        raise UserError(f"chain is not {'descending' if op == 'prune' else 'ascending'} in compute: member {i + 1} "
                        f"{b.name} ({rules.flops[i] / 1e9:.3g} GFLOPs) is {how[0]} member {i} {a.name} "
                        f"({rules.flops[i - 1] / 1e9:.3g} GFLOPs); members {how[1]} from their predecessor")
    if op not in ("none", "prune"):
        rules.validate_growth(a, b, op)


def _validate_targets(cfg: RunConfig, i: int, m: MemberConfig) -> None:
    """A target names the paradigm's headline metrics; ``until = "baseline"`` needs the baselines trained."""
    if m.until == "baseline" and not cfg.baselines:
        raise UserError(f"chain member {i + 1} ({m.model}): until = \"baseline\" needs baselines = true (or a "
                        f"target with the numbers to reach)")
    known = {metric.key: metric for metric in cfg.paradigm.metrics}
    for key in m.target or {}:
        if key not in known:
            raise unknown_name(f"target metric of chain member {i + 1}", key, known)
        _validate_target_value(f"chain member {i + 1} ({m.model})", known[key], m.target[key])


def _validate_target_value(where: str, metric: Metric, value: float) -> None:
    """A target value is a number its metric can take (`compt.paradigm.Metric.bounds`: a percentage in [0, 100])."""

    low, high = metric.bounds
    if not math.isfinite(value):
        raise UserError(f"{where}: target {metric.key} must be a finite number, got {value}")
    if not low <= value <= high:
        raise UserError(f"{where}: target {metric.key} = {value:g} is outside the values {metric.label} can take, "
                        f"[{low:g}, {high:g}]")


def _validate_measured(cfg: RunConfig, i: int, m: MemberConfig, rules: ChainRules) -> None:
    """A target names only metrics the run's validation split measures (`ChainRules.measured`)."""
    measured = rules.measured(cfg.paradigm.metrics)
    for key in m.target or {}:
        if key not in measured:
            raise UserError(f"chain member {i + 1} ({m.model}): target {key} cannot be measured on data kind "
                            f"{cfg.data.kind!r} (its validation split measures {', '.join(measured)})")


def resolved_member(member: MemberConfig, cfg: RunConfig) -> MemberConfig:
    """`member` with the defaults that depend on the run's paradigm filled in: ``distill`` ("default" → the
    paradigm's `default_distill`). The one place such a default is decided; the stage spec, validation and
    fingerprints all read the resolved member."""
    if member.distill != "default":
        return member
    return dataclasses.replace(member, distill=cfg.paradigm.default_distill)


def _validate_report_to(sinks: tuple[str, ...]) -> None:
    for sink in sinks:
        if sink not in REPORT_TO:
            raise unknown_name("train.report_to entry", sink, REPORT_TO)
    if "wandb" in sinks:
        import importlib.util

        if importlib.util.find_spec("wandb") is None:
            raise UserError("train.report_to has \"wandb\" but wandb is not installed: pip install 'compt[wandb]'")
def validate_data(data: DataConfig) -> None:
    """Checks of a `[data]` table alone: its `DataConfig.check` (the paradigm's subclass checks its own)."""
    data.check()


def validate_train(train: TrainConfig) -> None:
    """Checks of the `[train]` table: finite numbers, positive sizes and rates, min_lr at most lr, betas in
    [0, 1), at most `compt.threads.MAX_THREADS` threads, known precision."""
    from compt.threads import MAX_THREADS

    if train.precision not in ("auto", "fp32", "bf16"):
        raise UserError(f"train.precision must be auto, fp32 or bf16, got {train.precision!r}")
    for key in ("beta1", "beta2"):
        if not 0 <= getattr(train, key) < 1:
            raise UserError(f"train.{key} must be in [0, 1), got {getattr(train, key)!r}")
    check_range("train", train, {
        "batch_size": (1, None, True), "accum_steps": (1, None, True), "lr": (0, None, False),
        "min_lr": (0, None, True), "weight_decay": (0, None, True), "eps": (0, None, False),
        "warmup_steps": (0, None, True),
        "stage_warmup_steps": (0, None, True), "grad_clip": (0, None, True), "ckpt_every_steps": (0, None, True),
        "eval_every_epochs": (0, None, True), "log_every_steps": (0, None, True), "loader_workers": (-1, None, True),
        "teacher_cache_mem_gb": (0, None, True), "threads": (0, MAX_THREADS, True)})
    if train.teacher_cache_dir and not Path(train.teacher_cache_dir).expanduser().is_absolute():
        raise UserError(f"train.teacher_cache_dir must be an absolute path (each node resolves it on its own "
                        f"disk), got {train.teacher_cache_dir!r}")
    if train.min_lr > train.lr:
        raise UserError(f"train.min_lr {train.min_lr:g} is above train.lr {train.lr:g} (the schedule decays from the "
                        f"peak lr down to min_lr)")
    if train.batch_size % train.accum_steps:
        raise UserError(f"train.batch_size {train.batch_size} must be divisible by train.accum_steps "
                        f"{train.accum_steps} (each step is split into that many micro-batches)")
