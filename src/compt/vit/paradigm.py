"""The ViT classification paradigm's adapter: timm Vision Transformers behind `compt.paradigm.Paradigm`.

Members are `compt.vit.models.ViTConfig`s; a training sample is one labelled image, its cost one forward
(`compt.vit.flops`); growth is `compt.vit.growth` (``preserve``); the task is `compt.vit.task` (cross-entropy,
plus ``kl`` / ``feature`` / ``kl+feature`` distillation from the frozen parent); data and top-1 are
`compt.vit.data`; `compt export` writes a folder timm loads (`compt.vit.models.export_timm`); the command-line
members are `compt.vit.cli` (eval, grow) and `compt.vit.finetune`. Registered
through the entry point ``vit = "compt.vit.paradigm:PARADIGM"`` (group ``compt.paradigms``), not as a built-in.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from compt.errors import UserError
from compt.paradigm import PERCENT, ChainRules, Metric, StateDict
from compt.paradigm_base import ParadigmBase
from compt.settings import LogitDistillMember
from compt.vit.models import ViTConfig

if TYPE_CHECKING:
    from torch import Tensor, nn
    from torch.utils.data import Dataset


class ViTParadigm(ParadigmBase):
    """Supervised timm ViT classifiers (module docstring). `ParadigmBase`'s defaults hold for the rest: one
    tower, no patch dropout, no teacher cache (the teacher runs with the student), no pruning."""

    name = "vit"
    label = "ViT classifier"
    config_class = ViTConfig
    metrics = (Metric("top1", "top-1 accuracy (%)", digits=1, bounds=PERCENT),)
    member_options = LogitDistillMember   # its KL distillation's temperature
    default_distill = "kl"
    cli_module = "compt.vit.cli"   # compt grow, eval CHECKPOINT (it has no prune_pair: compt prune is refused)

    # ------------------------------------------------------------------ models
    def owns(self, model: str) -> bool:
        from compt.vit.models import list_vit_models

        return model in list_vit_models()

    def model_names(self, family: str | None = None) -> list[str]:
        from compt.vit.models import list_vit_models

        return list_vit_models(family)

    def families(self) -> dict[str, tuple[str, ...]]:
        from compt.vit.models import vit_families

        return vit_families()

    def member_config(self, model: str, objective: str | None) -> ViTConfig:
        from compt.vit.models import get_vit_config

        return get_vit_config(model)

    def config_from_dict(self, raw: dict[str, Any]) -> ViTConfig:
        return ViTConfig.from_dict(raw)

    def config_to_dict(self, cfg: ViTConfig) -> dict[str, Any]:
        return cfg.to_dict()

    def build(self, cfg: ViTConfig) -> nn.Module:
        from compt.vit.models import build_vit

        return build_vit(cfg)

    def block_types(self) -> tuple[type, ...]:
        """timm's transformer blocks."""
        from timm.models.vision_transformer import Block

        return (Block,)

    def objective(self, requested: str | None) -> str:
        if requested not in (None, "classification"):
            raise UserError(f"train.objective = {requested!r} is not an objective of ViT classifiers (they train on "
                            f"cross-entropy; leave train.objective unset)")
        return "classification"

    def decodes_per_sample(self, data: Any) -> bool:
        return data.kind == "folder"

    # ------------------------------------------------------------------ cost, rules, growth
    def forward_flops(self, cfg: ViTConfig, captions: int) -> float:
        from compt.vit.flops import vit_forward_flops

        return vit_forward_flops(cfg)

    def flops_row(self, model: str) -> dict[str, Any]:
        from compt.vit.flops import vit_forward_flops, vit_params
        from compt.vit.models import get_vit_config

        cfg = get_vit_config(model)
        return {"model": model, "gflops": vit_forward_flops(cfg) / 1e9, "params_m": vit_params(cfg) / 1e6}

    def chain_rules(self, cfg: Any) -> ChainRules:
        from compt.stage import stops
        from compt.vit.data import KINDS
        from compt.vit.flops import vit_forward_flops, vit_params
        from compt.vit.growth import VIT_GROWTH_OPS, validate_vit_growth
        from compt.vit.task import VIT_DISTILL_KINDS

        if cfg.data.kind not in KINDS:
            raise UserError(f"ViT classifiers train on [data] kind = {' or '.join(map(repr, KINDS))}, not "
                            f"{cfg.data.kind!r}")
        self.objective(cfg.train.objective)
        cfgs = [self.member_config(m.model, None) for m in cfg.chain]   # their folders are read by open_data
        if cfg.data.kind != "folder" and (cfg.data.eval_path or cfg.data.val_path):
            raise UserError(f"data.eval_path and data.val_path are image folders (kind \"folder\"); kind "
                            f"{cfg.data.kind!r} draws its own held-out and validation images")
        if cfg.data.kind == "fashion-mnist" and cfgs[0].num_classes != 10:
            raise UserError(f"Fashion-MNIST has 10 classes; {cfgs[0].name} classifies {cfgs[0].num_classes}")
        return ChainRules(configs=cfgs, flops=[vit_forward_flops(c) for c in cfgs],
                          growth_ops=(*VIT_GROWTH_OPS, "none"), distill_losses=(*VIT_DISTILL_KINDS, "none"),
                          validate_growth=validate_vit_growth, patch_tokens=(False,) * len(cfgs),
                          carves_validation=cfg.data.kind != "synthetic" and stops(cfg) and not cfg.data.val_path,
                          params=tuple(vit_params(c) for c in cfgs))

    def grow(self, parent_state: StateDict, parent_cfg: ViTConfig, child_cfg: ViTConfig, op: str,
             seed: int) -> StateDict:
        from compt.vit.growth import grow_vit

        return grow_vit(parent_state, parent_cfg, child_cfg, op, seed)

    # ------------------------------------------------------------------ data, task, step
    def open_data(self, cfg: Any, run_dir: Path) -> Any:
        from compt.paradigm import chain_rules
        from compt.vit.data import ViTData

        return ViTData(cfg.data, carve_validation=chain_rules(cfg).carves_validation)

    def build_task(self, student: nn.Module, spec: Any, teacher_state: StateDict | None, dataset: Dataset,
                   info: Any, out_dir: Path) -> tuple[nn.Module, bool]:
        """The plain task, or the distillation task of a spec with a teacher (no teacher cache)."""
        from compt.tasks import freeze
        from compt.vit.task import build_vit_task

        if spec.teacher is None:
            return build_vit_task(student), False
        if teacher_state is None:
            raise ValueError(f"stage {spec.model.name} distills from {spec.teacher.name} but got no teacher weights")
        teacher = freeze(self.create(spec.teacher, teacher_state)).to(info.device)
        return build_vit_task(student, distill=spec.distill, weight=spec.distill_weight, teacher=teacher,
                              student_dim=spec.model.width, teacher_dim=spec.teacher.width,
                              temperature=spec.distill_temperature), False

    def forward(self, task: nn.Module, batch: Any) -> dict[str, Tensor]:
        """images (B, C, H, W), labels (B,); the dataset index is not needed."""
        images, labels, _index = batch
        return task(images, labels)

    # ------------------------------------------------------------------ export
    def export(self, ckpt: Any, out: Path, model_name: str) -> None:
        """A folder timm loads (`compt.vit.models.export_timm`)."""
        from compt.vit.models import export_timm

        if model_name:
            raise UserError(f"{ckpt.path} is a ViT checkpoint ({ckpt.model_config.name}) with its own config; drop "
                            f"--model")
        export_timm(ckpt.model_config, ckpt.state_dict, out)

    def describe_samples(self, plan: Any) -> str:
        return "(one labelled image each)"

    # ------------------------------------------------------------------ command line (compt.vit.cli, .finetune)
    def eval_data_kinds(self) -> tuple[str, ...]:
        from compt.vit.data import KINDS

        return KINDS

    def finetune_defaults(self) -> Any:
        from compt.finetune_config import FinetuneConfig

        return FinetuneConfig()

    def finetune(self, target: str | Path, **options: Any) -> list[dict[str, Any]]:
        """A new head on a labelled set, every finished member (`compt.vit.finetune`)."""
        from compt.vit.finetune import finetune_run

        return finetune_run(target, **options)

    def load_help(self) -> str:
        return ("load with: c = json.load(open(FOLDER/config.json)); timm.create_model(c['architecture'], "
                "checkpoint_path=FOLDER/model.safetensors, **c['model_args'])")


PARADIGM = ViTParadigm()
