"""`ParadigmBase`: the defaults of a paradigm's optional members (`compt.paradigm.OPTIONAL`); `RunDataBase`: those
of a run's data (`compt.paradigm.RunData`).

A paradigm subclasses it and writes the required members (`compt.paradigm.Paradigm`, `compt.paradigm.REQUIRED`);
docs/architecture.md lists both. This module sits beside the registry, not in it, because its default `load_init`
reads checkpoints, and `compt.checkpoint` asks the registry for a checkpoint's paradigm.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compt.errors import UserError
from compt.settings import DataConfig, MemberConfig

if TYPE_CHECKING:
    from torch import Tensor, nn

    from compt.paradigm import Evaluate, StateDict


class ParadigmBase:
    """The optional members of a paradigm with their defaults: subclass it and write the `Paradigm` members.

    The defaults fit a one-tower model that trains on a plain objective, caches no teacher, holds its data in
    memory and cannot be pruned or exported; a paradigm overrides what differs.
    """

    name: str
    label: str

    # ------------------------------------------------------------------ models
    def families(self) -> dict[str, tuple[str, ...]]:
        """Registered families: name → member names, ascending (default: one family named after the paradigm)."""
        return {self.name: tuple(self.model_names())}   # type: ignore[attr-defined]

    def create(self, cfg: Any, state_dict: StateDict | None) -> nn.Module:
        """`build`, then load `state_dict` strictly when given (a mismatch is a one-line `UserError`)."""
        from compt.checkpoint import load_strict

        return load_strict(self.build(cfg), state_dict, cfg.name)   # type: ignore[attr-defined]

    def checkpoint_extras(self, cfg: Any) -> dict[str, Any]:
        """Extra top-level keys of a checkpoint of this config (e.g. open_clip's own model config); none."""
        return {}

    def block_types(self) -> tuple[type, ...]:
        """Module types that are one FSDP unit each and are compiled one by one (none: the whole model)."""
        return ()

    def fsdp_methods(self) -> tuple[str, ...]:
        """The model's methods besides ``forward`` that are called on the wrapped student (evaluation) and FSDP2
        must hook (none)."""
        return ()

    # ------------------------------------------------------------------ cost
    def trains_as(self, cfg: Any, patch_dropout: float) -> Any:
        """The config as the student trains (patch dropout applied; itself when 0, and for models without
        patches, where validation refuses patch dropout)."""
        return cfg

    def objective(self, requested: str | None) -> str:
        """The stage's task objective resolved from ``train.objective``: the paradigm's one objective, named
        after it (a requested one is refused)."""
        if requested is not None:
            raise UserError(f"train.objective = {requested!r} is not an objective of {self.label}s "
                            f"(leave train.objective unset)")
        return self.name

    def teacher_cache_bytes(self, samples: int, captions: int, teacher: Any) -> int:
        """Host bytes per node of a distillation stage's teacher cache (0: the paradigm caches nothing)."""
        return 0

    def decodes_per_sample(self, data: Any) -> bool:
        """Whether the training loader of `data` (a `compt.settings.DataConfig`) decodes each sample from files as
        it reads it (False: the samples are held in memory, decoded once); `compt plan` prices the loader then."""
        return False

    # ------------------------------------------------------------------ growth
    def load_init(self, path: Path, cfg: Any) -> StateDict:
        """The weights of an existing model of config `cfg` at `path` (member 1's ``init``): a compt checkpoint of
        this paradigm and config (the field's own formats where a paradigm reads them); otherwise a one-line
        `UserError`."""
        from compt.checkpoint import load_checkpoint

        ckpt = load_checkpoint(path)
        if ckpt.paradigm != self.name or ckpt.model_config != cfg:
            raise UserError(f"init {path} is not a compt checkpoint of {cfg.name} ({self.label})")
        self.create(cfg, ckpt.state_dict)   # every key and shape, strictly
        return ckpt.state_dict

    def grown_config(self, parent_cfg: Any, model: str) -> Any:
        """The config of registered model `model` grown from a parent of config `parent_cfg` (what the parent
        carries over besides its weights, e.g. SigLIP's logit bias; by default nothing); an unknown name is a
        `UserError`."""
        return self.member_config(model, None)   # type: ignore[attr-defined]

    def prune(self, parent_state: StateDict, parent_cfg: Any, child_cfg: Any, batch: Sequence[Tensor],
              device: Any) -> tuple[StateDict, dict[str, Any]]:
        """(a smaller child's state dict cut out of the parent's at its most important units, measured on the
        calibration `batch` — a collated training batch, `compt.prune.calibration_batch` — on `device`; the record:
        ``importance`` statistics and ``kept`` indices). ``validate_growth(parent, child, "prune")`` checks the pair.
        By default refused: a paradigm that prunes lists ``"prune"`` in `ChainRules.growth_ops`."""
        raise UserError(f"{self.label}s cannot be pruned")

    def key_place(self, cfg: Any, key: str) -> tuple[str, float]:
        """Where state-dict `key` of a model of config `cfg` sits: (tower or "", depth: −1 the stem, i block i,
        ∞ after the last block) — what partial inheritance keeps (`compt.inherit`); by default refused."""
        raise UserError(f"{self.label}s do not place their weights by depth: inherit = 'first:K' needs the "
                        f"paradigm's key_place")

    # ------------------------------------------------------------------ export, listings, report
    def export(self, ckpt: Any, out: Path, model_name: str) -> None:
        """Write checkpoint `ckpt` as a folder its field's library loads (`compt export`); by default refused."""
        raise UserError(f"{self.label}s have no export format (compt export)")

    def load_hint(self, folder: Path) -> str:
        """What a user passes to that library to load an exported folder (default: the folder)."""
        return str(folder)

    def load_help(self) -> str:
        """The line `compt export` closes with: how the field's library loads an exported FOLDER ("": none)."""
        return ""

    def listing(self, family: str | None) -> tuple[str, list[dict[str, Any]], list[str]] | None:
        """`compt models`: (JSON key, rows, text table) of `family` (None: all); None when not this paradigm's.
        By default each model's family and forward GFLOPs per sample."""
        families = self.families()
        if family not in (None, *families):
            return None
        rows = [{"model": m, "family": f, "gflops": self.flops_row(m)["gflops"]}
                for f, members in families.items() if family in (None, f) for m in members]
        head = f"{'model':<22} {'family':<10} {'GFLOPs':>10}"
        return f"{self.name}_models", rows, [head, "-" * len(head)] + [
            f"{r['model']:<22} {r['family']:<10} {r['gflops']:>10.4g}" for r in rows]

    def listed_families(self) -> tuple[str, ...]:
        """The ``compt models --family`` names `listing` answers (default: its `families`)."""
        return tuple(self.families())

    def flops_row(self, model: str) -> dict[str, Any]:
        """`compt flops`: forward FLOPs (and, where the paradigm counts them, parameters) of one model."""
        cfg = self.member_config(model, None)   # type: ignore[attr-defined]
        return {"model": model, "gflops": self.forward_flops(cfg, 1) / 1e9}   # type: ignore[attr-defined]

    def report_sections(self, run_dirs: Sequence[Path], out: Path) -> str:
        """Markdown the paradigm adds to `compt report` (its own evaluations, e.g. clip_benchmark); may be ""."""
        return ""

    def describe_samples(self, plan: Any) -> str:
        """What one of `compt plan`'s training samples is, after "N samples" (e.g. "× 7 caption(s)"; "": nothing
        to add)."""
        return ""

    def describe_data(self, data: Any) -> str:
        """A run's training data (a `compt.settings.DataConfig`) in a few words, for `compt demo`'s opening line."""
        return f"{data.kind} data ({data.num_samples:,} samples)"

    # ------------------------------------------------------------------ settings
    data_options: type[DataConfig] = DataConfig   # the run config's `[data]` table: the shared settings only
    member_options: type[MemberConfig] = MemberConfig   # its `[[chain]]` tables: the shared settings only

    # ------------------------------------------------------------------ command line (args: the parsed command)
    cli_module: str | None = None   # a module whose functions grow_command, prune_pair, calibration_set and
    #                                 eval_checkpoint (each called with the paradigm first) are those members

    def _unsupported(self, feature: str) -> UserError:
        """The one-line error of a feature this paradigm does not provide."""
        return UserError(f"the {self.name} paradigm does not support {feature}")

    def _command(self, name: str, feature: str) -> Any:
        """Function `name` of `cli_module`; where there is none, `feature` is unsupported."""
        import importlib

        found = getattr(importlib.import_module(self.cli_module), name, None) if self.cli_module else None
        if found is None:
            raise self._unsupported(feature)
        return found

    def reads_native(self, path: Path) -> bool:
        """Whether `path` (a folder or a config file, not a compt checkpoint) is a model in the field's own format
        that this paradigm reads: `compt grow` / `compt prune` then belong to it (default: none)."""
        return False

    def read_native(self, folder: Path) -> Any:
        """The model in the field's own format at `folder` as a `compt.checkpoint.Checkpoint`."""
        raise self._unsupported(f"reading {folder} (a model in its field's own format)")

    def grow_command(self, args: Any, ckpt: Any) -> int:
        """`compt grow`: write the child of parent checkpoint `ckpt` that ``args`` names (exit status)."""
        return self._command("grow_command", "compt grow")(self, args, ckpt)

    def prune_pair(self, args: Any, ckpt: Any) -> tuple[Any, Any, str]:
        """`compt prune`: (parent config, child config, where the parent's came from), the pair checked."""
        return self._command("prune_pair", "compt prune")(self, args, ckpt)

    def calibration_set(self, args: Any, ckpt: Any, parent_cfg: Any, samples: int, tmp: str
                        ) -> tuple[Any, str, Any]:
        """`compt prune`: (the calibration dataset of ``args``, its description, the tokenizer or None); `tmp` a
        scratch folder that lives while the batch is drawn."""
        return self._command("calibration_set", "compt prune")(self, args, ckpt, parent_cfg, samples, tmp)

    def write_native(self, child_cfg: Any, state: StateDict, out: Path, tokenizer: Any) -> None:
        """What the field's library loads, written beside a pruned child's checkpoint `out` (default: nothing)."""

    def eval_data_kinds(self) -> tuple[str, ...]:
        """The ``compt eval CHECKPOINT --data KIND`` kinds this paradigm evaluates (default: none)."""
        return ()

    def eval_checkpoint(self, args: Any) -> int:
        """`compt eval CHECKPOINT --data KIND` for one of `eval_data_kinds` (exit status)."""
        return self._command("eval_checkpoint", "compt eval")(self, args)

    def eval_tools(self) -> tuple[str, ...]:
        """The ``compt eval RUN_DIR`` options (their argparse names, e.g. ``benchmark``) whose evaluation of every
        member this paradigm runs (default: none)."""
        return ()

    def eval_run(self, args: Any, tool: str) -> int:
        """`compt eval RUN_DIR` with option `tool`, one of `eval_tools` (exit status)."""
        raise self._unsupported(f"compt eval --{tool.replace('_', '-')}")

    def finetune_defaults(self) -> Any:
        """The default recipe of `compt finetune` (a frozen dataclass whose fields are its options), or None where
        the paradigm has no fine-tuning (the default)."""
        return None

    def finetune(self, target: str | Path, **options: Any) -> list[dict[str, Any]]:
        """`compt finetune`: fine-tune every finished member of a run (or one checkpoint); each member's result."""
        raise self._unsupported("compt finetune")


class RunDataBase:
    """Defaults of a run's data (`compt.paradigm.RunData`): a paradigm writes ``train_set`` and ``evaluator`` and
    overrides what else its data has."""

    label = "this data"   # what the data is, in messages

    def validator(self, model_cfg: Any) -> Evaluate:
        """No validation split: a stopping rule (``until`` / ``target``) is refused when it asks for one."""
        raise UserError(f"{self.label} has no validation split, which a stopping rule (until / target) reads")

    def after_final(self, out_dir: Path, model_cfg: Any, weights: StateDict) -> None:
        """Nothing beside final.pt."""

    def fingerprint(self) -> dict[str, Any]:
        """No source files to record (the run config fully determines the data)."""
        return {}

    def lineage(self) -> dict[str, Any]:
        """Nothing recorded in the checkpoints about the data."""
        return {}

    def representations(self, model: nn.Module, model_cfg: Any) -> dict[str, Tensor]:
        """No representations: a grown member's diagnostics hold only its update norm (`compt.diagnostics`)."""
        return {}
