"""What the CLI commands do for CLIP models, behind the `compt.clip.paradigm` members they call: `compt grow` and
`compt prune` (a parent's config from its compt checkpoint, ``--from-model`` or a plain open_clip checkpoint's
shapes; the calibration set of ``--data KIND``; the ``open_clip_config.json`` beside a child) and `compt eval` (a
checkpoint on a data kind's suite; clip_benchmark on every member of a run, ``--benchmark``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compt.errors import UserError, unknown_name

if TYPE_CHECKING:
    from compt.checkpoint import Checkpoint
    from compt.clip.models import ModelConfig
    from compt.clip.settings import ClipDataConfig


def parent_config(ckpt: Checkpoint, from_model: str | None) -> tuple[ModelConfig, str]:
    """The parent's config and a note on where it came from (checkpoint, --from-model or inference)."""
    from compt.clip.models import get_model_config

    if ckpt.model_config is not None:
        if from_model and get_model_config(from_model).to_open_clip() != ckpt.model_config.to_open_clip():
            raise UserError(f"--from-model {from_model} contradicts the checkpoint's own model "
                            f"{ckpt.model_config.name}")
        return ckpt.model_config, f"parent model {ckpt.model_config.name} (from the checkpoint)"
    if from_model:
        return get_model_config(from_model), f"parent model {from_model} (--from-model)"
    from compt.clip.growth.infer import infer_model_config

    cfg, same = infer_model_config(ckpt.state_dict)
    also = f"; same architecture as {', '.join(same)}" if same else ""
    return cfg, f"inferred parent model {cfg.name} from the checkpoint's shapes{also}"


def check_config_folder(out: Path, child_cfg: ModelConfig) -> None:
    """The folder's `open_clip_config.json` describes one model: refuse to overwrite it with another's."""
    existing = out.parent / "open_clip_config.json"
    if not existing.is_file():
        return
    try:
        same = json.loads(existing.read_text()).get("model_cfg") == json.loads(json.dumps(child_cfg.to_open_clip()))
    except (json.JSONDecodeError, AttributeError):
        same = False
    if not same:
        raise UserError(f"{existing} already describes another model (open_clip's local-dir: reads one config per "
                        f"folder); put {child_cfg.name} in its own folder with --out")


def grow_command(paradigm: Any, args: argparse.Namespace, ckpt: Checkpoint) -> int:
    """An open_clip child: compt checkpoint plus ``open_clip_config.json`` (plain open_clip parents too)."""
    from compt.checkpoint import save_checkpoint
    from compt.clip.growth import get_operator, grow
    from compt.clip.models import get_model_config, write_open_clip_config
    from compt.commands.grow import lineage

    get_operator(args.op)
    child_cfg, out = get_model_config(args.child), Path(args.out)
    check_config_folder(out, child_cfg)
    parent_cfg, note = parent_config(ckpt, args.from_model)
    # a SigLIP parent (learnable logit bias) grows into the SigLIP variant of the named child
    child_cfg = dataclasses.replace(child_cfg, init_logit_bias=parent_cfg.init_logit_bias)
    state = grow(ckpt.state_dict, parent_cfg, child_cfg, args.op, args.seed)
    save_checkpoint(out, state_dict=state, model_config=child_cfg, lineage=lineage(args, parent_cfg.name))
    config = write_open_clip_config(child_cfg, out.parent)
    print(note)
    print(f"grew {parent_cfg.name} -> {child_cfg.name} with {args.op} (seed {args.seed}): {out}  [{config.name}]")
    return 0


def prune_pair(paradigm: Any, args: argparse.Namespace, ckpt: Checkpoint) -> tuple[Any, Any, str]:
    """(parent config, child config, where the parent's came from), the pair checked (`validate_clip_prune`)."""
    from compt.clip.prune import validate_clip_prune

    if args.tokenizer:
        raise UserError("--tokenizer is for language models; a CLIP model's tokenizer is open_clip's")
    parent_cfg, note = parent_config(ckpt, args.from_model)
    child_cfg = paradigm.grown_config(parent_cfg, args.child)
    check_config_folder(Path(args.out), child_cfg)
    validate_clip_prune(parent_cfg, child_cfg)
    return parent_cfg, child_cfg, note


def calibration_set(paradigm: Any, args: argparse.Namespace, _ckpt: Any, parent_cfg: Any, samples: int, _tmp: str
                    ) -> tuple[Any, str, None]:
    """The calibration set of ``--data KIND --data-path P`` at the parent's image size and context."""
    from compt.clip.data import adapter, build_train_dataset, check_data_kind
    from compt.clip.settings import ClipDataConfig
    from compt.config import validate_data

    kind = args.data or "synthetic"
    if adapter(kind).reads_path and not args.data_path:
        raise UserError(f"--data {kind} needs --data-path")
    data = ClipDataConfig(kind=kind, path=args.data_path, num_samples=samples, seed=args.seed)
    validate_data(data)
    check_data_kind(data)
    return build_train_dataset(data, parent_cfg), f"{kind}{':' + args.data_path if args.data_path else ''}", None


def eval_checkpoint(paradigm: Any, args: argparse.Namespace) -> int:
    """`compt eval CHECKPOINT --data KIND`: zero-shot, retrieval and linear probe of a CLIP checkpoint."""
    from compt.clip.data import build_eval_suite, evaluate
    from compt.commands.eval import check_target, write_json

    if args.tokenizer:
        raise UserError("--tokenizer is for language-model checkpoints (with --data text)")
    data = data_config(args)
    device = check_target(args)
    model, cfg = load_model(paradigm, args.checkpoint, args.model)
    model.to(device)
    start = time.perf_counter()
    suite = build_eval_suite(data, cfg)
    metrics = evaluate(model, suite, batch_size=args.batch_size, device=device)
    print(f"{cfg.name} on {suite.describe()}")
    print(format_table(metrics))
    print(f"({time.perf_counter() - start:.1f} s)")
    if args.json:
        write_json(args, cfg.name, dataclasses.asdict(data), suite.describe(), metrics)
    return 0


def data_config(args: argparse.Namespace) -> ClipDataConfig:
    """The `ClipDataConfig` the command line asks for."""
    from compt.clip.data import adapter, check_data_kind
    from compt.clip.settings import ClipDataConfig
    from compt.commands.eval import DEFAULT_EVAL_SAMPLES, check_numbers
    from compt.config import validate_data
    from compt.fields import parse_field

    check_numbers(args)
    whole_file = adapter(args.data).reads_path  # unknown kinds raise here
    values: dict[str, Any] = {"kind": args.data, "path": args.data_path, "eval_path": args.eval_path,
                              "eval_samples": args.eval_samples or DEFAULT_EVAL_SAMPLES, "seed": args.seed}
    if args.probe_samples is not None:  # else ClipDataConfig's default
        values["probe_samples"] = args.probe_samples
    if whole_file and not args.eval_path:
        values["eval_path"] = args.data_path
    if whole_file and not args.data_path:
        raise UserError(f"--data {args.data} needs --data-path")
    fields = {f.name: f for f in dataclasses.fields(ClipDataConfig)}
    for item in args.data_set:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise unknown_name("data setting", key, fields) if sep else UserError(f"--set {item!r}: use KEY=VALUE")
        values[key] = parse_field(ClipDataConfig, key, value, f"--set {key}")
    data = ClipDataConfig(**values)
    validate_data(data)
    check_data_kind(data)
    return data


def load_model(paradigm: Any, path: str, model_name: str) -> tuple[Any, Any]:
    """(model, ModelConfig) from a compt or plain open_clip checkpoint."""
    from compt.checkpoint import load_checkpoint
    from compt.clip.models import create_model, get_model_config
    from compt.paradigm import paradigm_named

    ckpt = load_checkpoint(path)
    if ckpt.paradigm != paradigm.name:
        raise UserError(f"{path} holds a {paradigm_named(ckpt.paradigm).label} ({ckpt.model_config.name}): "
                        f"evaluate it with --data text --data-path FILE_OR_FOLDER")
    cfg = ckpt.model_config
    if cfg is None:
        if not model_name:
            raise UserError(f"{path} is a plain open_clip checkpoint without a model config; pass --model NAME "
                            f"(e.g. --model tiny/ViT-S)")
        cfg = get_model_config(model_name)
    elif model_name and model_name != cfg.name:
        raise UserError(f"{path} holds a {cfg.name} model, not {model_name} (drop --model)")
    return create_model(cfg, state_dict=ckpt.state_dict), cfg


def format_table(metrics: dict[str, float]) -> str:
    """Two-column text table, summaries first."""
    summary = [k for k in metrics if "/" not in k]
    rows = summary + [k for k in metrics if "/" in k]
    width = max([len(k) for k in rows] + [6])
    lines = [f"{'metric':<{width}}  {'%':>7}", f"{'-' * width}  {'-' * 7}"]
    lines += [f"{k:<{width}}  {metrics[k]:7.2f}" for k in rows]
    return "\n".join(lines)


def run_benchmark(paradigm: Any, args: argparse.Namespace) -> int:
    """`--benchmark`: clip_benchmark on every member of the run directory (`compt.clip.bench`)."""
    from compt.clip.bench import BenchmarkConfig, run_benchmark
    from compt.config import read_run_config
    from compt.paradigm import paradigm_for_run

    run_dir = Path(args.checkpoint)
    if run_dir.is_file():
        raise UserError(f"--benchmark evaluates every member of a RUN_DIR with clip_benchmark; {run_dir} is a file")
    if (run_dir / "config.toml").is_file() and paradigm_for_run(read_run_config(run_dir)) is not paradigm:
        raise UserError(f"{args.checkpoint} is a language-model run: clip_benchmark evaluates CLIP models; "
                        f"evaluate the run with --lm-eval TASK, its checkpoints with --data text --data-path "
                        f"FILE_OR_FOLDER")
    if not args.dataset_root:
        raise UserError("--benchmark needs --dataset-root ROOT (the datasets must already be there: offline)")
    cfg = BenchmarkConfig(datasets=tuple(d.strip() for d in args.benchmark.split(",")), task=args.task,
                          dataset_root=args.dataset_root, batch_size=args.batch_size, workers=args.workers)
    files = run_benchmark(args.checkpoint, cfg)
    print(f"{len(files)} clip_benchmark result files under {Path(args.checkpoint) / 'benchmark' / 'results'}; "
          f"`compt report {shlex.quote(str(args.checkpoint))}` tabulates them")
    return 0
