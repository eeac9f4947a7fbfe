"""`Paradigm`: what a pre-training paradigm supplies to the chain, and the one registry of paradigms.

compt's core — run configs, `compt.stage.StageSpec`, the chain runner (`compt.chain`), the stage trainer
(`compt.train`), checkpoints, the planner and the report — never imports a paradigm. It asks this registry:

* `paradigm_of(model_name)`: the paradigm whose registry holds a model (the one answer to "which kind of
  model is this?"); `paradigm_for_run(cfg)` the same for a whole chain (every member must agree);
* `paradigm_named(name)`: by the name stored in checkpoints and lineage (``"clip"``, ``"lm"``);
* `paradigm_of_config(cfg)`: by the class of a model config (a checkpoint's writer);
* `lower_is_better(key)`: the direction of a headline metric (`Metric`), the one answer to it.

Built-in paradigms are imported lazily by module name (`BUILTIN`), so importing the core stays cheap and
free of paradigm code. Another package adds one through the entry-point group ``compt.paradigms``
(`load_entry_points`, read once, when a name is none of the registered ones) or `register_paradigm`; either
checks the paradigm first (`conformance_problems`: the `REQUIRED` members, and the `OPTIONAL` ones that
`compt.paradigm_base.ParadigmBase` supplies). docs/architecture.md lists both; ``tests/test_paradigm.py`` holds
a complete small paradigm.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from compt.errors import UserError, one_line, unknown_name
from compt.settings import DataConfig, MemberConfig

if TYPE_CHECKING:
    from torch import Tensor, nn
    from torch.utils.data import Dataset

    from compt.tasks import Task

Evaluate = Callable[["nn.Module"], dict[str, float]]
StateDict = dict[str, "Tensor"]

# name → module whose ``PARADIGM`` attribute is the paradigm (imported on first use)
BUILTIN = {"clip": "compt.clip.paradigm", "lm": "compt.lm.paradigm"}
PERCENT = (0.0, 100.0)   # the bounds of a metric in percent (`Metric.bounds`)


@dataclass(frozen=True)
class Metric:
    """A headline metric of a paradigm's evaluation: its key in a stage's metrics, its label and direction, and
    the values it can take (a stopping target outside them is refused: a percentage lies in [0, 100])."""

    key: str
    label: str
    higher_is_better: bool = True
    digits: int = 1          # decimals in tables
    bounds: tuple[float, float] = (-math.inf, math.inf)


@dataclass(frozen=True)
class ChainRules:
    """What one chain allows, as `compt.config.validate` checks it: the members' configs as the run trains them
    (resolved here once for every consumer: `compt.chain.member_config`), the forward FLOPs that order them, the
    growth operators and distillation losses (each with ``"none"``; operators with ``"prune"`` where the paradigm
    prunes, `Paradigm.prune`), the pairwise check ``validate_growth(parent, child, op)`` (for ``"prune"``: the
    child is no larger than the parent), whether each member has image patches to
    drop (FLIP), the towers a member may inherit alone (`compt.inherit`; none for a one-tower model), the
    metrics the run's validation split measures, whether that split is carved out of the training data and, for
    paradigms that count tokens, each member's tokens per sample and parameters."""

    configs: list[Any]
    flops: list[float]
    growth_ops: tuple[str, ...]
    distill_losses: tuple[str, ...]
    validate_growth: Callable[[Any, Any, str], None]
    patch_tokens: tuple[bool, ...] = ()
    towers: tuple[str, ...] = ()
    measures: tuple[str, ...] | None = None   # headline metric keys the run's validation split measures (None: all)
    carves_validation: bool = False   # the run's validation split is carved out of its training data (then recorded
                                      # in every stage's fingerprint: the training data depend on it)
    sample_tokens: tuple[int, ...] = ()   # tokens in one training sample of each member, for `compt plan`'s tokens
                                          # per parameter (language models; () where the paradigm counts none)
    params: tuple[int, ...] = ()          # each member's parameters, with `sample_tokens`
    notes: tuple[str, ...] = ()           # what resolving the configs changed, one line each (said once as a run
                                          # starts and by `compt plan`: e.g. a vocabulary resized to the tokenizer)

    def measured(self, metrics: Sequence[Metric]) -> tuple[str, ...]:
        """The keys of `metrics` (the paradigm's headline metrics) that the run's validation split measures: what a
        target may name and what ``until = "baseline"`` targets."""
        return tuple(m.key for m in metrics if self.measures is None or m.key in self.measures)


@runtime_checkable
class RunData(Protocol):
    """A run's data, built once per run by `Paradigm.open_data` and shared by its stages."""

    def train_set(self, model_cfg: Any) -> Dataset:
        """The training set a member of this config reads (built once per input shape)."""

    def evaluator(self, model_cfg: Any) -> Evaluate:
        """``evaluate(model) -> metrics`` of a member of this config (the stage's held-out evaluation)."""

    def validator(self, model_cfg: Any) -> Evaluate:
        """``evaluate(model) -> metrics`` on a validation split disjoint from the held-out one: what a stopping
        probe reads (`compt.train.stopping`); a `UserError` when the data has no such split."""

    def after_final(self, out_dir: Path, model_cfg: Any, weights: StateDict) -> None:
        """Anything the paradigm writes beside a finished stage's final.pt (e.g. a Hugging Face folder)."""

    def fingerprint(self) -> dict[str, Any]:
        """A cheap description of the data's source files (names, sizes, a hash of the caption or text files),
        recorded when a stage starts; a resume refuses data that changed since."""

    def lineage(self) -> dict[str, Any]:
        """What every checkpoint of a stage records about the data once it is built (language models: the
        tokenizer's identity, ``tokenizer``, `compt.lm.tokenizers`); {} for nothing."""

    def representations(self, model: nn.Module, model_cfg: Any) -> dict[str, Tensor]:
        """Named (N, d) representations of a fixed held-out set (`compt.diagnostics` compares a grown member's
        with its parent's; N is the same for every member, d may differ)."""


@runtime_checkable
class Paradigm(Protocol):
    """What a paradigm must supply: its models, their cost, the chain's rules, growth, data, task and step.

    Every method receives resolved settings (a model config, a `compt.stage.StageSpec`); none reads the run
    config's raw tables again. The optional members (`OPTIONAL`) have defaults in
    `compt.paradigm_base.ParadigmBase`; a registered paradigm has every member (`register_paradigm` checks), so
    the core may call any of them.
    """

    name: str                       # stored in checkpoints and lineage
    label: str                      # what a member is, in messages ("CLIP model", "language model")
    config_class: type              # the paradigm's frozen model config dataclass
    metrics: tuple[Metric, ...]     # headline metrics (tables, plots, the demo's closing line)
    default_distill: str            # a grown member's distillation loss when the member names none
    data_options: type              # its `[data]` settings: `compt.settings.DataConfig` or a subclass adding its own
    member_options: type            # its `[[chain]]` settings: `compt.settings.MemberConfig` or a subclass
    cli_module: str | None          # the module of its command-line functions (`compt.paradigm_base.ParadigmBase`)

    # ------------------------------------------------------------------ models
    def owns(self, model: str) -> bool:
        """Whether `model` is a registered size of this paradigm."""

    def model_names(self, family: str | None = None) -> list[str]:
        """Registered model names (of one family)."""

    def member_config(self, model: str, objective: str | None) -> Any:
        """The config a chain member of this name trains as (the run's objective may change it)."""

    def config_from_dict(self, raw: dict[str, Any]) -> Any: ...

    def config_to_dict(self, cfg: Any) -> dict[str, Any]: ...

    def build(self, cfg: Any) -> nn.Module:
        """A freshly initialised model (the caller seeds the RNG)."""

    # ------------------------------------------------------------------ cost, rules and growth
    def forward_flops(self, cfg: Any, captions: int) -> float:
        """Forward FLOPs of one training sample (`captions` caption slots where the paradigm has them)."""

    def chain_rules(self, cfg: Any) -> ChainRules:
        """The rules of run config `cfg`'s chain (data and model checks that are this paradigm's)."""

    def grow(self, parent_state: StateDict, parent_cfg: Any, child_cfg: Any, op: str, seed: int) -> StateDict:
        """A child state dict from the parent's by the named growth operator (shapes asserted)."""

    # ------------------------------------------------------------------ data, task, step
    def open_data(self, cfg: Any, run_dir: Path) -> RunData:
        """The run's data (training sets and evaluators, built lazily)."""

    def build_task(self, student: nn.Module, spec: Any, teacher_state: StateDict | None, dataset: Dataset,
                   info: Any, out_dir: Path) -> tuple[Task, bool]:
        """(task, whether the teacher's forward is paid once by a cache fill) of a stage; the task is an
        `nn.Module` that fits `compt.tasks.Task` (the trainer checks)."""

    def forward(self, task: Task, batch: Sequence[Tensor]) -> dict[str, Tensor]:
        """One micro-batch (already on the device) through the task; the dict holds ``loss``."""


REQUIRED = ("name", "label", "config_class", "metrics", "default_distill", "owns", "model_names", "member_config",
            "config_from_dict", "config_to_dict", "build", "forward_flops", "chain_rules", "grow", "open_data",
            "build_task", "forward")


# the members `compt.paradigm_base.ParadigmBase` supplies defaults for (a paradigm may override each)
OPTIONAL = ("families", "create", "checkpoint_extras", "block_types", "fsdp_methods", "trains_as", "objective",
            "teacher_cache_bytes", "decodes_per_sample", "load_init", "grown_config", "prune", "key_place", "export",
            "load_hint", "load_help", "listing", "listed_families", "flops_row", "report_sections", "describe_samples",
            "describe_data", "data_options", "member_options",
            # the command line's members (compt grow, prune, eval, finetune)
            "cli_module", "reads_native", "read_native",
            "grow_command", "prune_pair", "calibration_set", "write_native",
            "eval_data_kinds", "eval_checkpoint", "eval_tools", "eval_run", "finetune_defaults", "finetune")
ENTRY_POINTS = "compt.paradigms"   # the entry-point group through which another package adds a paradigm

_REGISTRY: dict[str, Paradigm] = {}
_OWNER: dict[str, Paradigm] = {}   # model name → its paradigm, as `paradigm_of` found it (reset on registration)
_PLUGINS: list[bool] = []          # [True] once the entry points were loaded (at most once per process)


def conformance_problems(paradigm: Any) -> list[str]:
    """What keeps `paradigm` from being registered: required members missing or of the wrong kind, optional ones
    missing (a paradigm that does not subclass `compt.paradigm_base.ParadigmBase` must write them all); [] = it
    conforms."""
    missing = [m for m in (*REQUIRED, *OPTIONAL) if not hasattr(paradigm, m)]
    if missing:
        return [f"lacks {', '.join(missing)}" + (" (subclass compt.paradigm_base.ParadigmBase for the optional "
                                                 "members' defaults)" if set(missing) & set(OPTIONAL) else "")]
    problems = [f"{m} is not callable" for m in (*REQUIRED[5:], *OPTIONAL)
                if m != "cli_module" and not callable(getattr(paradigm, m))]
    if not (paradigm.cli_module is None or isinstance(paradigm.cli_module, str)):
        problems.append("cli_module must be a module name or None")
    for member, base in (("data_options", DataConfig), ("member_options", MemberConfig)):
        cls = getattr(paradigm, member)
        if not (isinstance(cls, type) and issubclass(cls, base)):
            problems.append(f"{member} must be compt.settings.{base.__name__} or a subclass")
    if not (isinstance(paradigm.name, str) and paradigm.name and isinstance(paradigm.label, str)):
        problems.append("name and label must be non-empty strings")
    if not isinstance(paradigm.config_class, type):
        problems.append("config_class is not a class")
    if not (isinstance(paradigm.metrics, tuple) and paradigm.metrics
            and all(isinstance(m, Metric) for m in paradigm.metrics)):
        problems.append("metrics must be a non-empty tuple of compt.paradigm.Metric")
    return problems


def register_paradigm(paradigm: Paradigm) -> Paradigm:
    """Add a paradigm once it conforms (`conformance_problems`: a one-line `UserError` naming what it lacks); a
    name may be registered once; built-ins register themselves on first lookup."""
    problems = conformance_problems(paradigm)
    if problems:
        who = getattr(paradigm, "name", None) or type(paradigm).__qualname__
        raise UserError(f"paradigm {who!r} cannot be registered: {'; '.join(problems)}")
    if paradigm.name in _REGISTRY and _REGISTRY[paradigm.name] is not paradigm:
        raise ValueError(f"paradigm {paradigm.name!r} is already registered")
    _REGISTRY[paradigm.name] = paradigm
    _OWNER.clear()
    return paradigm


def unregister_paradigm(name: str) -> None:
    """Remove a registered paradigm (tests that define their own)."""
    _REGISTRY.pop(name, None)
    _OWNER.clear()


def load_entry_points() -> None:
    """Register the paradigm of every entry point in group ``compt.paradigms`` (once per process): an entry point
    names a paradigm object or a class to instantiate, under the paradigm's name (``toy = "pkg.toy:PARADIGM"``);
    one that fails to load is a one-line `UserError` naming it."""
    if _PLUGINS:
        return
    _PLUGINS.append(True)
    for ep in importlib.metadata.entry_points(group=ENTRY_POINTS):
        where = f"entry point {ep.name} = {ep.value!r} (group {ENTRY_POINTS})"
        try:
            found = ep.load()
            paradigm = found() if isinstance(found, type) else found
        except Exception as e:   # whatever another package raises on import, reported in one line
            raise UserError(f"{where} failed to load: {type(e).__name__}: {one_line(str(e))}") from e
        if getattr(paradigm, "name", ep.name) != ep.name:
            raise UserError(f"{where} holds paradigm {paradigm.name!r}, not {ep.name!r}")
        if _REGISTRY.get(ep.name) is not paradigm:
            try:
                register_paradigm(paradigm)
            except (UserError, ValueError) as e:
                raise UserError(f"{where}: {e}") from e


def paradigms(installed: bool = False) -> list[Paradigm]:
    """Every paradigm: the built-ins, then those registered later (with `installed`, the entry points' too)."""
    for name, module in BUILTIN.items():
        if name not in _REGISTRY:
            register_paradigm(importlib.import_module(module).PARADIGM)
    if installed:
        load_entry_points()
    return list(_REGISTRY.values())


def paradigm_named(name: str) -> Paradigm:
    """The paradigm stored under `name` in a checkpoint or lineage (the entry points are read when it is none of
    the registered ones)."""
    found = {p.name: p for p in paradigms()}
    if name not in found:
        found = {p.name: p for p in paradigms(installed=True)}
    if name not in found:
        raise unknown_name("paradigm", name, found)
    return found[name]


def paradigm_of(model: str) -> Paradigm:
    """The paradigm whose registry holds `model` (asked once per name; the entry points are read when no
    registered paradigm owns it); an unknown name lists every registered model."""
    if model in _OWNER:
        return _OWNER[model]
    for installed in (False, True):
        for p in paradigms(installed):
            if p.owns(model):
                _OWNER[model] = p
                return p
    raise unknown_name("model", model, [m for p in paradigms() for m in p.model_names()])


def finetuner() -> Paradigm:
    """The paradigm that provides `compt finetune` (the first whose `finetune_defaults` is a recipe); none is a
    one-line `UserError`."""
    found = next((p for p in paradigms() if p.finetune_defaults() is not None), None)
    if found is None:
        raise UserError("no registered paradigm supports compt finetune")
    return found


def metric_info(key: str) -> Metric:
    """The `Metric` named `key` in any paradigm (direction, decimals); an unknown key: higher is better."""
    for p in paradigms():
        for m in p.metrics:
            if m.key == key:
                return m
    return Metric(key, key)


def lower_is_better(key: str) -> bool:
    """Whether a smaller value of metric `key` is better (its `Metric.higher_is_better`): the one answer, for the
    stopping probes, the report, the plots and the results pages alike."""
    return not metric_info(key).higher_is_better


def paradigm_for_run(cfg: Any) -> Paradigm:
    """The one paradigm of every member of run config `cfg` (a chain cannot mix paradigms)."""
    found = [paradigm_of(m.model) for m in cfg.chain]
    if any(p is not found[0] for p in found):
        kinds = ", ".join(f"{m.model} ({p.name})" for m, p in zip(cfg.chain, found))
        raise UserError(f"a chain cannot mix paradigms: {kinds}")
    return found[0]


_RULES: dict[int, tuple[weakref.ref, ChainRules]] = {}   # id(run config) → (the config, its rules) while it lives


def chain_rules(cfg: Any) -> ChainRules:
    """The rules of run config `cfg`'s chain, from its paradigm (`Paradigm.chain_rules`), resolved once per run
    config: validation, the stages, the run's data and the planner all read the same member configs. Held beside
    the config (by a weak reference), not in it, so a run config stays a plain, picklable value."""
    key = id(cfg)
    if key not in _RULES or _RULES[key][0]() is not cfg:
        _RULES[key] = (weakref.ref(cfg, lambda _: _RULES.pop(key, None)), cfg.paradigm.chain_rules(cfg))
    return _RULES[key][1]


def paradigm_of_config(cfg: Any) -> Paradigm:
    """The paradigm whose model config class `cfg` is an instance of (exact class)."""
    by_class = {p.config_class: p for p in paradigms()}
    if type(cfg) not in by_class:
        by_class = {p.config_class: p for p in paradigms(installed=True)}
    if type(cfg) not in by_class:
        raise TypeError(f"{type(cfg).__name__} is not the model config of a registered paradigm")
    return by_class[type(cfg)]
