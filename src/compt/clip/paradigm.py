"""The CLIP paradigm's adapter: open_clip image–text models behind `compt.paradigm.Paradigm`.

Members are `compt.clip.models.ModelConfig`s (ViT or Swin image towers; SigLIP adds a learnable logit bias,
`compt.clip.siglip`); a training sample is one image with K caption slots, its cost image + K · text forward
FLOPs (`compt.clip.flops`); growth is `compt.clip.growth` (``corner``, ``preserve``, ``stack``); the task is
`compt.clip.tasks` (InfoNCE or SigLIP, plus ``fd`` / ``affinity`` / ``icl`` distillation from the frozen
parent, whose features may come from a teacher cache filled once); data and evaluation are `compt.clip.data`
(zero-shot classification, retrieval, linear probe).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compt.clip.models import ModelConfig
from compt.clip.settings import ClipDataConfig, ClipMemberConfig
from compt.errors import UserError
from compt.paradigm import PERCENT, ChainRules, Evaluate, Metric, StateDict
from compt.paradigm_base import ParadigmBase

if TYPE_CHECKING:
    from torch import Tensor, nn
    from torch.utils.data import Dataset


class ClipData:
    """A CLIP run's training sets and evaluation suites, built once per (image size, context length); `carve`:
    the run carves its validation split out of the training data (`carves_validation`)."""

    def __init__(self, cfg: Any, carve: bool = False) -> None:
        self.data, self.carve = cfg.data, carve
        self._train: dict[tuple[int, int], Dataset] = {}
        self._suites: dict[tuple[int, int, bool], Any] = {}

    @staticmethod
    def _key(model_cfg: ModelConfig) -> tuple[int, int]:
        return model_cfg.vision.image_size, model_cfg.text.context_length

    def train_set(self, model_cfg: ModelConfig) -> Dataset:
        from compt.clip.data import build_train_dataset

        key = self._key(model_cfg)
        if key not in self._train:
            self._train[key] = build_train_dataset(self.data, model_cfg, carve=self.carve)
        return self._train[key]

    def _suite(self, model_cfg: ModelConfig, validation: bool = False) -> Any:
        from compt import distributed
        from compt.clip.data import build_eval_suite, validation_line

        key = (*self._key(model_cfg), validation)
        if key not in self._suites:
            self._suites[key] = build_eval_suite(self.data, model_cfg, validation=validation, carve=self.carve)
            if validation and not any(k[2] for k in self._suites if k != key):   # said once per run
                distributed.say(validation_line(self.data, self._suites[key]))
        return self._suites[key]

    def evaluator(self, model_cfg: ModelConfig) -> Evaluate:
        from compt.clip.data import evaluate

        suite = self._suite(model_cfg)
        return lambda model: evaluate(model, suite)

    def validator(self, model_cfg: ModelConfig) -> Evaluate:
        """The held-out evaluation's tasks on the validation split (`compt.clip.data.build_eval_suite`)."""
        from compt.clip.data import evaluate

        suite = self._suite(model_cfg, validation=True)
        return lambda model: evaluate(model, suite)

    def fingerprint(self) -> dict[str, Any]:
        """The source files of a file-based data kind (CSV/TSV with its captions hashed, shards, image folders;
        the held-out ``eval_path`` too); {} for the built-in sets, which the run config fully determines."""
        from compt.clip.data.files import expand_braces
        from compt.datafp import files_fingerprint

        out: dict[str, Any] = {}
        for role in ("path", "eval_path", "val_path"):
            name = getattr(self.data, role)
            if not name or self.data.kind not in ("csv", "wds", "wds-stream", "folder"):
                continue
            root = Path(name)
            files = ([p for p in root.rglob("*") if p.is_file()] if root.is_dir()
                     else [Path(p) for p in expand_braces(name) if Path(p).is_file()])
            found = files_fingerprint(files, root if root.is_dir() else None, hashed=(".csv", ".tsv", ".txt"))
            # two folders holding the same relative name: the later one's entry is named by its role
            out.update({f"{role}:{k}" if k in out else k: v for k, v in found.items()})
        return out

    def lineage(self) -> dict[str, Any]:
        """Nothing: the run config and the data fingerprint describe CLIP data."""
        return {}

    def representations(self, model: nn.Module, model_cfg: ModelConfig) -> dict[str, Tensor]:
        """Normalised image and caption embeddings of the held-out retrieval split."""
        from compt.clip.evaluation import retrieval_embeddings

        return retrieval_embeddings(model, self._suite(model_cfg))

    def after_final(self, out_dir: Path, model_cfg: ModelConfig, weights: StateDict) -> None:
        """Nothing beside final.pt: a CLIP checkpoint already loads in open_clip (`compt export` for folders)."""


class ClipParadigm(ParadigmBase):
    """open_clip CLIP / SigLIP members (see the module docstring)."""

    name = "clip"
    label = "CLIP model"
    config_class = ModelConfig
    metrics = (Metric("zeroshot_top1", "zero-shot top-1", bounds=PERCENT),
               Metric("retrieval_r1", "retrieval R@1", bounds=PERCENT))
    default_distill = "fd"
    cli_module = "compt.clip.cli"   # compt grow, prune, eval CHECKPOINT
    data_options = ClipDataConfig
    member_options = ClipMemberConfig

    # ------------------------------------------------------------------ models
    def owns(self, model: str) -> bool:
        from compt.clip.models import get_model_config

        try:
            get_model_config(model)
        except UserError:
            return False
        return True

    def model_names(self, family: str | None = None) -> list[str]:
        from compt.clip.models import list_models

        return list_models(family)

    def families(self) -> dict[str, tuple[str, ...]]:
        from compt.clip.models import list_families

        return list_families()

    def member_config(self, model: str, objective: str | None) -> ModelConfig:
        from compt.clip.models import get_model_config
        from compt.clip.siglip import model_for_objective

        return model_for_objective(get_model_config(model), objective)

    def config_from_dict(self, raw: dict[str, Any]) -> ModelConfig:
        return ModelConfig.from_dict(raw)

    def config_to_dict(self, cfg: ModelConfig) -> dict[str, Any]:
        return cfg.to_dict()

    def checkpoint_extras(self, cfg: ModelConfig) -> dict[str, Any]:
        return {"open_clip_config": cfg.to_open_clip()}

    def build(self, cfg: ModelConfig) -> nn.Module:
        from compt.clip.models import build_model

        return build_model(cfg)

    def create(self, cfg: ModelConfig, state_dict: StateDict | None) -> nn.Module:
        from compt.clip.models import create_model

        return create_model(cfg, state_dict=state_dict)

    def block_types(self) -> tuple[type, ...]:
        """open_clip's transformer blocks (ViT and text towers) and timm's Swin block."""
        from open_clip.transformer import ResidualAttentionBlock
        from timm.models.swin_transformer import SwinTransformerBlock

        return ResidualAttentionBlock, SwinTransformerBlock

    def fsdp_methods(self) -> tuple[str, ...]:
        """The towers' encoders, which evaluation calls on the wrapped student."""
        return "encode_image", "encode_text"

    # ------------------------------------------------------------------ cost
    def forward_flops(self, cfg: ModelConfig, captions: int) -> float:
        from compt.clip.flops import model_flops

        return model_flops(cfg).per_sample(captions)

    def trains_as(self, cfg: ModelConfig, patch_dropout: float) -> ModelConfig:
        """`cfg` with a fraction `patch_dropout` of its image patches dropped in training (itself when 0)."""
        return replace(cfg, vision=replace(cfg.vision, patch_dropout=patch_dropout)) if patch_dropout else cfg

    def objective(self, requested: str | None) -> str:
        from compt.clip.siglip import is_siglip

        return "siglip" if is_siglip(requested) else "clip"

    def teacher_cache_bytes(self, samples: int, captions: int, teacher: ModelConfig) -> int:
        from compt.clip.teacher_cache import cache_bytes

        return cache_bytes(samples, captions, teacher.embed_dim)

    def decodes_per_sample(self, data: Any) -> bool:
        """File sets above ``data.predecode_max`` images are decoded lazily (`compt.clip.data.datasets.build_pairs`);
        a webdataset stream always is."""
        from compt.clip.data import adapter

        return adapter(data.kind).reads_path and (data.kind == "wds-stream" or data.num_samples > data.predecode_max)

    # ------------------------------------------------------------------ rules and growth
    def chain_rules(self, cfg: Any) -> ChainRules:
        from compt.clip.data import adapter, check_data_kind
        from compt.clip.flops import model_flops
        from compt.clip.growth import GROWTH_OPS, validate_pair
        from compt.clip.prune import validate_clip_prune
        from compt.clip.tasks import DISTILL_NAMES

        if cfg.data.kind in ("text", "tokens", "documents"):
            raise UserError(f"[data] kind = \"{cfg.data.kind}\" is for language-model chains (lm/… models); CLIP "
                            f"models need image–caption data")
        self.objective(cfg.train.objective)  # unknown objectives are a UserError
        check_data_kind(cfg.data)
        cfgs = [self.member_config(m.model, cfg.train.objective) for m in cfg.chain]
        return ChainRules(configs=cfgs, flops=[model_flops(c).total for c in cfgs],
                          growth_ops=(*GROWTH_OPS, "prune", "none"), distill_losses=DISTILL_NAMES,
                          validate_growth=lambda a, b, op: validate_clip_prune(a, b) if op == "prune" else
                          validate_pair(a, b, op),
                          patch_tokens=tuple(not c.is_swin for c in cfgs), towers=("vision", "text"),
                          measures=adapter(cfg.data.kind).measures, carves_validation=carves_validation(cfg))

    def load_init(self, path: Path, cfg: ModelConfig) -> StateDict:
        """A compt checkpoint of the same architecture, or a plain open_clip checkpoint whose keys and shapes fit."""
        from compt.checkpoint import load_checkpoint

        ckpt = load_checkpoint(path)
        if ckpt.paradigm != self.name:
            raise UserError(f"init {path} holds a {ckpt.paradigm} model, not a CLIP model")
        if ckpt.model_config is not None and ckpt.model_config.to_open_clip() != cfg.to_open_clip():
            raise UserError(f"init {path} holds a {ckpt.model_config.name} model, not {cfg.name} (another shape)")
        self.create(cfg, ckpt.state_dict)   # every key and shape, strictly
        return ckpt.state_dict

    def grown_config(self, parent_cfg: ModelConfig, model: str) -> ModelConfig:
        """A SigLIP parent (learnable logit bias) grows into the SigLIP variant of the named child."""
        from compt.clip.models import get_model_config

        return replace(get_model_config(model), init_logit_bias=parent_cfg.init_logit_bias)

    def grow(self, parent_state: StateDict, parent_cfg: ModelConfig, child_cfg: ModelConfig, op: str,
             seed: int) -> StateDict:
        from compt.clip.growth import grow

        return grow(parent_state, parent_cfg, child_cfg, op, seed)

    def prune(self, parent_state: StateDict, parent_cfg: ModelConfig, child_cfg: ModelConfig,
              batch: Sequence[Tensor], device: Any) -> tuple[StateDict, dict[str, Any]]:
        from compt.clip.prune import prune_clip_model

        return prune_clip_model(parent_state, parent_cfg, child_cfg, batch, device)

    def key_place(self, cfg: ModelConfig, key: str) -> tuple[str, float]:
        from compt.clip.growth.common import key_place

        return key_place(cfg, key)

    # ------------------------------------------------------------------ data, task, step
    def open_data(self, cfg: Any, run_dir: Path) -> ClipData:
        return ClipData(cfg, carve=carves_validation(cfg))

    def build_task(self, student: nn.Module, spec: Any, teacher_state: StateDict | None, dataset: Dataset,
                   info: Any, out_dir: Path) -> tuple[nn.Module, bool]:
        """(task, whether the teacher's features come from a cache filled once)."""
        from compt.clip.tasks import build_task

        if spec.teacher is None:
            return build_task(student, objective=spec.objective), False
        s_cfg, t_cfg = spec.model, spec.teacher
        if teacher_state is None:
            raise ValueError(f"stage {s_cfg.name} distills from {t_cfg.name} but got no teacher weights")
        if (t_cfg.vision.image_size, t_cfg.text.context_length) != (s_cfg.vision.image_size,
                                                                    s_cfg.text.context_length):
            raise UserError(f"teacher {t_cfg.name} and student {s_cfg.name} need the same image size and context")
        from compt.tasks import freeze

        teacher = freeze(self.create(t_cfg, teacher_state)).to(info.device)
        cache = _teacher_cache(teacher, spec, dataset, info, out_dir)
        task = build_task(student, distill=spec.distill, weight=spec.distill_weight,
                          teacher=None if cache is not None else teacher, student_dim=s_cfg.embed_dim,
                          teacher_dim=t_cfg.embed_dim, cache=cache, objective=spec.objective)
        return task, cache is not None

    def forward(self, task: nn.Module, batch: Sequence[Tensor]) -> dict[str, Tensor]:
        """images uint8 (B, 3, H, W) → normalised on the device; tokens (B, K, ctx); index (B,); teacher rows."""
        from compt.clip.data.images import to_model_input

        images, tokens, index, *teacher_rows = batch
        return task(to_model_input(images), tokens, index, *teacher_rows)

    # ------------------------------------------------------------------ export
    def export(self, ckpt: Any, out: Path, model_name: str) -> None:
        from compt.clip.export import export_clip

        export_clip(ckpt, out, model_name)

    def load_hint(self, folder: Path) -> str:
        """How a user loads an exported member: open_clip's model name for a local folder."""
        return f"local-dir:{folder}"

    def load_help(self) -> str:
        return ("load with: open_clip.create_model_and_transforms('local-dir:FOLDER'), "
                "open_clip.get_tokenizer('local-dir:FOLDER')")

    def report_sections(self, run_dirs: Sequence[Path], out: Path) -> str:
        """The clip_benchmark per-dataset table, when `compt eval --benchmark` ran on the runs, and the
        fine-tuning table, when `compt finetune` did."""
        from compt.clip.bench.table import benchmark_section
        from compt.clip.finetune.table import finetune_section

        return benchmark_section(list(run_dirs), out) + finetune_section(list(run_dirs), out)

    def describe_samples(self, plan: Any) -> str:
        return f"× {plan.captions} caption(s)"

    def describe_data(self, data: Any) -> str:
        where = "the embedded synthetic corpus" if data.kind == "synthetic" else f"{data.kind} {data.path}".rstrip()
        return f"{where} ({data.num_samples:,} pairs)"

    # ------------------------------------------------------------------ command line (compt.clip.cli)
    def write_native(self, child_cfg: ModelConfig, state: StateDict, out: Path, tokenizer: Any) -> None:
        """``open_clip_config.json`` in the child's folder (open_clip's ``local-dir:``)."""
        from compt.clip.models import write_open_clip_config

        write_open_clip_config(child_cfg, out.parent)

    def eval_data_kinds(self) -> tuple[str, ...]:
        """The image–caption kinds whose suites measure something (``text`` is the language models' corpus)."""
        from compt.clip.data import ADAPTERS

        return tuple(k for k, a in ADAPTERS.items() if a.measures)

    def eval_tools(self) -> tuple[str, ...]:
        return ("benchmark",)   # clip_benchmark

    def eval_run(self, args: Any, tool: str) -> int:
        from compt.clip.cli import run_benchmark

        return run_benchmark(self, args)

    def finetune_defaults(self) -> Any:
        from compt.finetune_config import FinetuneConfig

        return FinetuneConfig()

    def finetune(self, target: str | Path, **options: Any) -> list[dict[str, Any]]:
        """The image tower of every finished member with a linear head (`compt.clip.finetune.runner`)."""
        from compt.clip.finetune.runner import finetune_run

        return finetune_run(target, **options)

    # ------------------------------------------------------------------ listings (compt models, compt flops)
    def listing(self, family: str | None) -> tuple[str, list[dict[str, Any]], list[str]] | None:
        """(JSON key, rows, text lines) of `compt models` for `family` (None: all); None: not this paradigm's."""
        from compt.clip.models import list_families, list_models

        families = list_families()
        if family not in (None, "open_clip", *families):
            return None
        rows = [_model_row(n) for n in list_models(family, upstream=False)]
        head = f"{'model':<22} {'family':<10} {'vision':<16} {'text':<11} {'embed':>5} {'img':>4} " \
               f"{'params img/txt (M)':>19} {'GFLOPs img/txt':>17}"
        lines = [head, "-" * len(head)] + [
            f"{r['model']:<22} {r['family']:<10} {r['vision']:<16} {r['text']:<11} {r['embed_dim']:>5} "
            f"{r['image_size']:>4} {r['params_image_m']:>9.2f}/{r['params_text_m']:<9.2f} "
            f"{r['image_gflops']:>8.3g}/{r['text_gflops']:<8.3g}" for r in rows]
        lines += ["", "families (ascending compute): " + "; ".join(
            f"{k}: {' < '.join(v)}" for k, v in families.items() if family in (None, k))]
        if family is None:
            lines.append("upstream open_clip ViT configs: compt models --family open_clip")
        return "models", rows, lines

    def listed_families(self) -> tuple[str, ...]:
        """Its families and ``open_clip``: upstream open_clip's ViT configs."""
        return (*self.families(), "open_clip")

    def flops_row(self, model: str) -> dict[str, Any]:
        """`compt flops`: forward GFLOPs of one image and one caption, parameters."""
        from compt.clip.flops import model_flops
        from compt.clip.models import get_model_config

        cfg = get_model_config(model)
        f = model_flops(cfg)
        return {"model": cfg.name, "image_gflops": f.image / 1e9, "text_gflops": f.text / 1e9,
                "gflops": f.total / 1e9, "params_m": f.params / 1e6, "params_image_m": f.params_image / 1e6,
                "params_text_m": f.params_text / 1e6, "image_size": cfg.vision.image_size,
                "context_length": cfg.text.context_length}


def carves_validation(cfg: Any) -> bool:
    """Whether run config `cfg` carves its validation split out of the training data: a member trains until a
    target (`compt.stage.stops`), ``data.val_path`` is unset and the kind has no validation source of its own.
    The one answer, read by the run's data (`ClipData`) and the stages' fingerprints (`ChainRules`)."""
    from compt.clip.data import adapter
    from compt.stage import stops

    return stops(cfg) and not cfg.data.val_path and adapter(cfg.data.kind).carves


def _teacher_cache(teacher: nn.Module, spec: Any, dataset: Dataset, info: Any, out_dir: Path) -> Any:
    """The teacher's features over the whole (deterministic) training set, computed once; None when the
    run disabled the cache or the data is augmented or streamed."""
    from compt import distributed
    from compt.clip.teacher_cache import cache_bytes, fill_teacher_cache
    from compt.stage import teacher_cache_folder
    from compt.train.loader import resolve_workers

    train, t_cfg = spec.train, spec.teacher
    if not (train.teacher_cache and getattr(dataset, "deterministic", False)):
        return None
    big = cache_bytes(len(dataset), spec.captions, t_cfg.embed_dim) > train.teacher_cache_mem_gb * 2**30
    shared = big or distributed.local_world_size() > 1  # one copy per node: a file every local rank maps
    view = dataset.uint8_view() if hasattr(dataset, "uint8_view") else dataset
    return fill_teacher_cache(teacher, view, captions=spec.captions, embed_dim=t_cfg.embed_dim,
                              batch_size=train.batch_size // info.world_size, info=info, precision=train.precision,
                              workers=resolve_workers(train.loader_workers),
                              mmap_dir=teacher_cache_folder(train, out_dir) if shared else None,
                              reuse=(out_dir / "last.pt").is_file())  # resuming: the same teacher and data



def _model_row(name: str) -> dict[str, Any]:
    """One row of `compt models` for a CLIP model."""
    from compt.clip.flops import model_flops
    from compt.clip.models import get_model_config

    cfg = get_model_config(name)
    f = model_flops(cfg)
    v, t = cfg.vision, cfg.text
    vision = f"swin C{v.swin.embed_dim} {'-'.join(map(str, v.swin.depths))}" if v.swin else f"{v.width}×{v.layers}"
    return {"model": name, "family": cfg.family, "vision": vision, "text": f"{t.width}/{t.heads}×{t.layers}",
            "embed_dim": cfg.embed_dim, "image_size": v.image_size, "params_image_m": f.params_image / 1e6,
            "params_text_m": f.params_text / 1e6, "image_gflops": f.image / 1e9, "text_gflops": f.text / 1e9,
            "gflops": f.total / 1e9}


PARADIGM = ClipParadigm()
