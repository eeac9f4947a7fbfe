"""The language-model paradigm's adapter: Hugging Face Llama decoders behind `compt.paradigm.Paradigm`.

Members are `compt.lm.models.LMConfig`s; a training sample is one window of ``context + 1`` tokens, its cost
one sequence's forward (`compt.lm.flops`); growth is `compt.lm.growth` (``preserve``, ``stack``,
``corner``); the task is `compt.lm.task` (next-token loss, plus ``kl`` / ``hidden`` / ``kl+hidden``
distillation from the frozen parent); data and evaluation are `compt.lm.data` (a text corpus tokenised once,
held-out loss and perplexity) and every finished stage also writes a Hugging Face folder ``hf/``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compt.errors import UserError
from compt.lm.models import LMConfig
from compt.lm.settings import LMDataConfig
from compt.paradigm import ChainRules, Metric, StateDict
from compt.paradigm_base import ParadigmBase
from compt.settings import LogitDistillMember

if TYPE_CHECKING:
    from torch import Tensor, nn
    from torch.utils.data import Dataset


class LMParadigm(ParadigmBase):
    """Decoder-only Llama members (see the module docstring). `ParadigmBase`'s defaults hold for the rest: no
    image patches, no teacher cache (the teacher runs with the student on every batch), the corpus tokenised
    once into memory, a grown member's config is its registered one."""

    name = "lm"
    label = "language model"
    config_class = LMConfig
    metrics = (Metric("val_loss", "held-out loss", higher_is_better=False, digits=3, bounds=(0.0, math.inf)),
               Metric("val_ppl", "held-out perplexity", higher_is_better=False, digits=3, bounds=(1.0, math.inf)))
    default_distill = "kl"
    cli_module = "compt.lm.cli"   # compt grow, prune, eval CHECKPOINT
    data_options = LMDataConfig
    member_options = LogitDistillMember

    # ------------------------------------------------------------------ models
    def owns(self, model: str) -> bool:
        from compt.lm.models import list_lm_models

        return model in list_lm_models()

    def model_names(self, family: str | None = None) -> list[str]:
        from compt.lm.models import list_lm_models

        return list_lm_models(family)

    def families(self) -> dict[str, tuple[str, ...]]:
        from compt.lm.models import lm_families

        return lm_families()

    def member_config(self, model: str, objective: str | None) -> LMConfig:
        from compt.lm.models import get_lm_config

        return get_lm_config(model)

    def config_from_dict(self, raw: dict[str, Any]) -> LMConfig:
        return LMConfig.from_dict(raw)

    def config_to_dict(self, cfg: LMConfig) -> dict[str, Any]:
        return cfg.to_dict()

    def build(self, cfg: LMConfig) -> nn.Module:
        from compt.lm.models import build_model

        return build_model(cfg)

    def create(self, cfg: LMConfig, state_dict: StateDict | None) -> nn.Module:
        from compt.lm.models import create_lm

        return create_lm(cfg, state_dict=state_dict)

    def block_types(self) -> tuple[type, ...]:
        """A Llama model's decoder layers."""
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer

        return (LlamaDecoderLayer,)

    # ------------------------------------------------------------------ cost
    def forward_flops(self, cfg: LMConfig, captions: int) -> float:
        from compt.lm.flops import lm_flops

        return lm_flops(cfg).forward

    def objective(self, requested: str | None) -> str:
        if requested not in (None, "next-token"):
            raise UserError(f"train.objective = {requested!r} is a CLIP objective; language models train on the "
                            f"next-token loss (leave train.objective unset)")
        return "next-token"

    # ------------------------------------------------------------------ rules and growth
    def chain_rules(self, cfg: Any) -> ChainRules:
        from compt.lm.corpus import KINDS
        from compt.lm.data import carves_validation
        from compt.lm.flops import lm_flops
        from compt.lm.growth import LM_GROWTH_OPS, validate_lm_growth
        from compt.lm.prune import validate_lm_prune
        from compt.lm.task import LM_DISTILL_KINDS

        if cfg.data.kind not in ("text", *KINDS):
            raise UserError(f"language models train on [data] kind = \"text\", \"tokens\" or \"documents\", not "
                            f"{cfg.data.kind!r}")
        if cfg.data.kind in KINDS and cfg.data.tokenizer == "bpe":
            raise UserError("data.tokenizer = \"bpe\" is fitted to a text corpus (kind \"text\"); token and "
                            "document corpora need a fixed tokenizer: byte, or the Hugging Face one their tokens "
                            "were made with")
        self.objective(cfg.train.objective)
        cfgs, notes = self.run_configs(cfg)
        return ChainRules(configs=cfgs, notes=notes, flops=[lm_flops(c).forward for c in cfgs],
                          growth_ops=(*LM_GROWTH_OPS, "prune", "none"), distill_losses=(*LM_DISTILL_KINDS, "none"),
                          validate_growth=lambda a, b, op: validate_lm_prune(a, b) if op == "prune" else
                          validate_lm_growth(a, b), patch_tokens=(False,) * len(cfgs),
                          carves_validation=carves_validation(cfg),
                          sample_tokens=tuple(c.context_length for c in cfgs),
                          params=tuple(lm_flops(c).params for c in cfgs))

    def run_configs(self, cfg: Any) -> tuple[list[LMConfig], tuple[str, ...]]:
        """(the members' configs as run config `cfg` trains them, what was resolved: one line or none). Every
        member shares the vocabulary and context of its registered config; a Hugging Face tokenizer with more ids
        than that vocabulary resizes every member's to hold them (`compt.lm.models.fit_vocab`: rounded up to a
        multiple of 64), so the family still shares one vocabulary and growth is unaffected (a ``bpe`` tokenizer
        is trained to fit the vocabulary as it is)."""
        from compt.lm.models import fit_vocab
        from compt.lm.tokenizers import load_hf, run_source

        source = run_source(cfg)
        cfgs = [self.member_config(m.model, None) for m in cfg.chain]
        for c in cfgs[1:]:
            if (c.vocab_size, c.context_length) != (cfgs[0].vocab_size, cfgs[0].context_length):
                raise UserError(f"every member must share the vocabulary and context ({c.name} differs from "
                                f"{cfgs[0].name}): they read the same token array")
        if source.kind != "hf":
            return cfgs, ()
        tok = load_hf(source.path)
        resized = [fit_vocab(c, tok.vocab_size) for c in cfgs]
        if resized[0] is cfgs[0]:
            return cfgs, ()
        return resized, (f"tokenizer {tok.name} has {tok.vocab_size:,} token ids, more than the members' vocab_size "
                         f"{cfgs[0].vocab_size:,}: every member's vocabulary is resized to {resized[0].vocab_size:,} "
                         f"(the ids rounded up to a multiple of 64)",)

    def load_init(self, path: Path, cfg: LMConfig) -> StateDict:
        """A compt LM checkpoint, or a Hugging Face folder (``config.json`` + weights) whose Llama config has
        this member's shape (`hf_shape_problems`)."""
        from compt.checkpoint import load_checkpoint

        if path.is_dir():
            problems = hf_shape_problems(path, cfg)
            if problems:
                raise UserError(f"init {path} is not a {cfg.name}: {'; '.join(problems)}{resized_note(cfg)}")
            from transformers import AutoModelForCausalLM

            state = AutoModelForCausalLM.from_pretrained(path).state_dict()
        else:
            ckpt = load_checkpoint(path)
            if ckpt.paradigm != self.name or ckpt.model_config is None:
                raise UserError(f"init {path} is not a compt language-model checkpoint")
            got = ckpt.model_config
            if got.to_dict() | {"name": "", "family": ""} != cfg.to_dict() | {"name": "", "family": ""}:
                shape = f" of vocab_size {got.vocab_size:,}" if got.vocab_size != cfg.vocab_size else ""
                raise UserError(f"init {path} holds a {got.name} model{shape}, not {cfg.name}{resized_note(cfg)}")
            state = ckpt.state_dict
        self.create(cfg, state)   # every key and shape, strictly
        return state

    def grown_config(self, parent_cfg: LMConfig, model: str) -> LMConfig:
        """Registered `model` with the parent's vocabulary where that is larger (a parent trained with a tokenizer
        that resized its family's vocabulary, `run_configs`, or a Hugging Face model's own)."""
        from dataclasses import replace

        child = self.member_config(model, None)
        return replace(child, vocab_size=parent_cfg.vocab_size) if parent_cfg.vocab_size > child.vocab_size else child

    def grow(self, parent_state: StateDict, parent_cfg: LMConfig, child_cfg: LMConfig, op: str,
             seed: int) -> StateDict:
        from compt.lm.growth import grow_lm

        return grow_lm(parent_state, parent_cfg, child_cfg, op, seed)

    def prune(self, parent_state: StateDict, parent_cfg: LMConfig, child_cfg: LMConfig, batch: Sequence[Tensor],
              device: Any) -> tuple[StateDict, dict[str, Any]]:
        from compt.lm.prune import prune_lm_model

        return prune_lm_model(parent_state, parent_cfg, child_cfg, batch, device)

    def key_place(self, cfg: LMConfig, key: str) -> tuple[str, float]:
        from compt.lm.growth import key_place

        return key_place(cfg, key)

    # ------------------------------------------------------------------ data, task, step
    def open_data(self, cfg: Any, run_dir: Path) -> Any:
        from compt.lm.data import LMData, carves_validation

        return LMData(cfg, run_dir, carve=carves_validation(cfg))

    def build_task(self, student: nn.Module, spec: Any, teacher_state: StateDict | None, dataset: Dataset,
                   info: Any, out_dir: Path) -> tuple[nn.Module, bool]:
        """The plain LM task, or the distillation task of a spec with a teacher (no teacher cache)."""
        from compt.lm.task import build_lm_task
        from compt.tasks import freeze

        if spec.teacher is None:
            return build_lm_task(student), False
        if teacher_state is None:
            raise ValueError(f"stage {spec.model.name} distills from {spec.teacher.name} but got no teacher weights")
        teacher = freeze(self.create(spec.teacher, teacher_state)).to(info.device)
        return build_lm_task(student, distill=spec.distill, weight=spec.distill_weight, teacher=teacher,
                             student_dim=spec.model.hidden, teacher_dim=spec.teacher.hidden,
                             temperature=spec.distill_temperature), False

    def forward(self, task: nn.Module, batch: Sequence[Tensor]) -> dict[str, Tensor]:
        """tokens (B, context + 1) of one window each; the dataset index is not needed."""
        tokens, _index = batch
        return task(tokens)

    # ------------------------------------------------------------------ export
    def export(self, ckpt: Any, out: Path, model_name: str) -> None:
        """Hugging Face folder of a language model with the tokenizer it was trained with
        (`compt.lm.evaluate.checkpoint_tokenizer`; none when it cannot be found)."""
        from compt.lm.evaluate import checkpoint_tokenizer
        from compt.lm.models import export_pretrained, require_transformers

        if model_name:
            raise UserError(f"{ckpt.path} is a language-model checkpoint ({ckpt.model_config.name}) with its own "
                            f"config; drop --model (it names plain open_clip checkpoints)")
        require_transformers()
        export_pretrained(ckpt.model_config, ckpt.state_dict, out, tokenizer=checkpoint_tokenizer(ckpt))

    def load_hint(self, folder: Path) -> str:
        """How a user loads an exported member: the folder itself (``from_pretrained``)."""
        return str(folder)

    def load_help(self) -> str:
        return ("load with: transformers.AutoModelForCausalLM.from_pretrained(FOLDER), "
                "transformers.AutoTokenizer.from_pretrained(FOLDER) (when FOLDER has tokenizer.json)")

    def report_sections(self, run_dirs: Sequence[Path], out: Path) -> str:
        """The lm-evaluation-harness per-task tables, when `compt eval --lm-eval` ran on the runs."""
        from compt.lm.harness.table import harness_section

        return harness_section(list(run_dirs), out)

    def describe_samples(self, plan: Any) -> str:
        return f"of {plan.sample_tokens:,} tokens"

    def describe_data(self, data: Any) -> str:
        return f"{data.path or 'the Python standard library sources'} ({data.num_samples:,} training windows)"

    # ------------------------------------------------------------------ command line (compt.lm.cli)
    def reads_native(self, path: Path) -> bool:
        """A Hugging Face Llama folder, or a ``config.json`` of one."""
        return path.is_dir() or path.name.endswith(".json")

    def read_native(self, folder: Path) -> Any:
        from compt.lm.cli import hf_checkpoint

        return hf_checkpoint(folder)

    def eval_data_kinds(self) -> tuple[str, ...]:
        return ("text", "tokens", "documents")

    def eval_tools(self) -> tuple[str, ...]:
        return ("lm_eval",)   # lm-evaluation-harness

    def eval_run(self, args: Any, tool: str) -> int:
        from compt.lm.cli import run_harness

        return run_harness(self, args)

    def write_native(self, child_cfg: LMConfig, state: StateDict, out: Path, tokenizer: Any) -> None:
        """A Hugging Face folder ``<out stem>-hf/`` with the tokenizer."""
        from compt.lm.models import export_pretrained

        export_pretrained(child_cfg, state, out.parent / f"{out.stem}-hf", tokenizer=tokenizer)

    # ------------------------------------------------------------------ listings (compt models, compt flops)
    def listing(self, family: str | None) -> tuple[str, list[dict[str, Any]], list[str]] | None:
        """(JSON key, rows, text lines) of `compt models` for `family` (None: all); None: not this paradigm's."""
        from compt.lm.models import list_lm_models, lm_families

        if family not in (None, *lm_families()):
            return None
        rows = [_lm_row(n) for n in list_lm_models(family)]
        head = f"{'model':<14} {'family':<10} {'d×L':>9} {'heads/kv':>8} {'MLP':>5} {'vocab':>6} {'ctx':>5} " \
               f"{'params (M)':>10} {'GFLOPs/seq':>10}"
        return "language_models", rows, [head, "-" * len(head)] + [
            f"{r['model']:<14} {r['family']:<10} {r['hidden']:>5}×{r['layers']:<3} {r['heads']:>5}/{r['kv_heads']:<2} "
            f"{r['intermediate']:>5} {r['vocab']:>6} {r['context']:>5} {r['params_m']:>10.2f} {r['gflops']:>10.4g}"
            for r in rows]

    def flops_row(self, model: str) -> dict[str, Any]:
        """`compt flops`: forward GFLOPs of one sequence, training FLOPs per token (6·N + attention)."""
        from compt.lm.flops import lm_flops
        from compt.lm.models import get_lm_config

        cfg = get_lm_config(model)
        f = lm_flops(cfg)
        return {"model": cfg.name, "gflops": f.forward / 1e9, "train_flops_per_token": f.train_flops(1),
                "params_m": f.params / 1e6, "params_matmul_m": f.params_matmul / 1e6,
                "context_length": cfg.context_length, "vocab_size": cfg.vocab_size}


def _lm_row(name: str) -> dict[str, Any]:
    """One row of `compt models` for a language model."""
    from compt.lm.flops import lm_flops
    from compt.lm.models import get_lm_config

    c = get_lm_config(name)
    f = lm_flops(c)
    return {"model": name, "family": c.family, "hidden": c.hidden, "layers": c.layers, "heads": c.heads,
            "kv_heads": c.kv_heads, "head_dim": c.head_dim, "intermediate": c.intermediate, "vocab": c.vocab_size,
            "context": c.context_length, "params_m": f.params / 1e6, "gflops": f.forward / 1e9}



def resized_note(cfg: LMConfig) -> str:
    """Why member `cfg`'s vocabulary is not its registered one (the run's tokenizer resized it, `run_configs`);
    "" when it is."""
    from compt.lm.models import get_lm_config, is_lm

    registered = get_lm_config(cfg.name).vocab_size if is_lm(cfg.name) else cfg.vocab_size
    if registered == cfg.vocab_size:
        return ""
    return (f" (its vocabulary of {registered:,} is resized to {cfg.vocab_size:,} to hold the run's tokenizer's "
            f"ids; an init's vocabulary is not resized)")


def hf_shape_problems(folder: Path, cfg: LMConfig) -> list[str]:
    """How a Hugging Face folder's ``config.json`` (`compt.lm.models.config_from_hf`) differs from member `cfg`'s
    shape, one 'key got (the member has want)' line per field, named as config.json names it ([] = it fits)."""
    from compt.lm.models import HF_NAMES, config_from_hf

    got = config_from_hf(folder)
    return [f"{key} {getattr(got, f)!r} (the member has {getattr(cfg, f)!r})" for f, key in HF_NAMES.items()
            if getattr(got, f) != getattr(cfg, f)]


PARADIGM = LMParadigm()
