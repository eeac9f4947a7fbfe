"""compt — Chain-of-Models Pre-Training (CoM-PT) for model families: CLIP/SigLIP (open_clip) and decoder-only
language models (Hugging Face Llama).

The Python API (the CLI's commands are built on the same functions)::

    import compt

    plan = compt.plan_chain("configs/demo-quick.toml")               # FLOPs of the chain vs each member alone
    results = compt.train_chain("configs/demo-quick.toml", "runs/q")   # every stage, resumable; results by stage
    print(compt.report_runs("runs/q"))                                # the paper-style table (Markdown)
    model = compt.load_member("runs/q/chain/02-tiny_ViT-T/final.pt")   # an open_clip CLIP / a LlamaForCausalLM
    state = compt.grow_checkpoint("runs/q/chain/02-tiny_ViT-T/final.pt", "tiny/ViT-C")  # a child's weights
    results = compt.finetune_run("runs/q", data="synthetic", mode="linear")   # held-out top-1 of every member

Imports are lazy: ``import compt`` loads no torch. (The names differ from the subpackages ``compt.train``,
``compt.plan`` and ``compt.report``, which an import would otherwise shadow.)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor, nn

    from compt.config import RunConfig
    from compt.plan import ChainPlan

__version__ = "0.1.0"
__all__ = ["finetune_run", "grow_checkpoint", "load_config", "load_member", "plan_chain", "report_runs", "train_chain"]


def load_config(config: str | Path | RunConfig, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """A validated run config: a TOML path (with ``key=value`` overrides) or a `RunConfig` (checked as is)."""
    from compt.config import RunConfig, validate
    from compt.config import load_config as read

    if isinstance(config, RunConfig):
        if overrides:
            raise ValueError("overrides apply to a TOML run config; change a RunConfig with dataclasses.replace")
        validate(config)
        return config
    return read(config, list(overrides))


def plan_chain(config: str | Path | RunConfig, *, overrides: list[str] | tuple[str, ...] = (),
         cached_teacher: bool = False) -> ChainPlan:
    """The chain's cost model (`compt.plan.plan_chain`): per-member and family FLOPs, reduction, acceleration."""
    from compt.plan import plan_chain as plan

    return plan(load_config(config, overrides), cached_teacher=cached_teacher)


def train_chain(config: str | Path | RunConfig, run_dir: str | Path | None = None, *,
          overrides: list[str] | tuple[str, ...] = (), baselines: bool | None = None,
          progress: bool = True) -> dict[str, dict[str, Any]]:
    """Train every stage of a run config in `run_dir` (default ``runs/<name>``), resuming finished work;
    returns each stage's result (metrics, FLOPs, wall-clock, checkpoint) by stage key (``chain-2``, …)."""
    from compt.chain import train_run

    cfg = load_config(config, overrides)
    return train_run(cfg, Path(run_dir) if run_dir else Path("runs") / cfg.name, baselines=baselines,
                     progress=progress)


def report_runs(run_dirs: str | Path | list[str | Path], out_dir: str | Path | None = None) -> str:
    """Write the report of one run (or several seeds of one config) and return its Markdown."""
    from compt.report import write_report

    dirs = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
    return write_report(dirs, out_dir)[1]


def load_member(checkpoint: str | Path) -> nn.Module:
    """The model of a compt checkpoint, built by its paradigm's library (an open_clip ``CLIP``, a
    ``transformers`` ``LlamaForCausalLM``, …) with its weights, in eval mode."""
    from compt.checkpoint import load_checkpoint
    from compt.errors import UserError
    from compt.paradigm import paradigm_named

    ckpt = load_checkpoint(checkpoint)
    if ckpt.model_config is None:
        raise UserError(f"{checkpoint} is a plain open_clip checkpoint without a model config: load it with "
                        f"open_clip.create_model(NAME, pretrained=PATH)")
    return paradigm_named(ckpt.paradigm).create(ckpt.model_config, ckpt.state_dict).eval()


def grow_checkpoint(parent: str | Path, to: str, *, op: str = "preserve", seed: int = 0,
         out: str | Path | None = None) -> dict[str, Tensor]:
    """The weights of model `to` grown from the compt checkpoint `parent` by growth operator `op` (the
    parent's paradigm's operators); with `out`, also written there as a self-describing checkpoint."""
    from compt.checkpoint import load_checkpoint, save_checkpoint, sha256_file
    from compt.errors import UserError
    from compt.paradigm import paradigm_named

    ckpt = load_checkpoint(parent)
    if ckpt.model_config is None:
        raise UserError(f"{parent} has no model config (a plain open_clip file): use `compt grow --from-model`")
    p = paradigm_named(ckpt.paradigm)
    child = p.grown_config(ckpt.model_config, to)
    state = p.grow(ckpt.state_dict, ckpt.model_config, child, op, seed)
    if out is not None:
        lineage = {"parent": str(Path(parent).resolve()), "parent_sha256": sha256_file(parent),
                   "parent_model": ckpt.model_config.name, "operator": op, "seed": seed, "stage": "grow"}
        save_checkpoint(out, state_dict=state, model_config=child, lineage=lineage)
    return state


def finetune_run(run_dir: str | Path, *, data: str = "synthetic", mode: str = "full", redo: bool = False,
                 progress: bool = True, **settings: Any) -> list[dict[str, Any]]:
    """Fine-tune the image tower of every finished member of a CLIP run (or of one checkpoint) with a linear head
    on `data` (``synthetic[:TASK]``, ``fashion-mnist[:ROOT]``, ``folder:PATH``), `mode` full or linear, any
    `compt.finetune_config.FinetuneConfig` field as a keyword; resumable. Returns each member's result (held-out
    ``top1`` in %, settings, sizes), also written to ``RUN/finetune/<member>/<dataset>[-linear].json``."""
    from compt.paradigm import finetuner

    return finetuner().finetune(run_dir, data=data, mode=mode, redo=redo, progress=progress, **settings)
