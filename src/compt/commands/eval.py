"""`compt eval CHECKPOINT --data KIND [--data-path P] [--model NAME] [--json OUT]`.

Evaluates a compt checkpoint (its model config is inside) or a plain open_clip checkpoint (then
``--model NAME`` says which shape it has) on a data kind's evaluation suite: zero-shot top-1/top-5,
retrieval recall@1/5/10, linear probe. Prints a table; ``--json`` also writes the metrics.

For ``csv``, ``wds`` and ``folder`` the file(s) named by ``--data-path`` are evaluated whole (unless
``--eval-path`` names a separate held-out set); for ``fashion-mnist`` and ``openclipart`` ``--data-path``
overrides the dataset folder. Other data settings: ``--set key=value`` (any `DataConfig` field).

A language-model checkpoint (`compt.lm`; its stored config says so) evaluates on ``--data text --data-path
FILE_OR_FOLDER`` (default: `compt.lm.text.default_corpus`, the standard library's sources): held-out loss
(nats/token), perplexity, bits per byte (byte-level tokenizer) and the token count over the last
``--eval-samples`` windows of the text (`compt.lm.evaluate`; with a run's corpus and ``data.eval_samples`` that
is the run's own held-out split). ``--tokenizer FOLDER_OR_FILE`` (a Hugging Face tokenizer) overrides the tokenizer
(default: the one the checkpoint was trained with, `compt.lm.evaluate.resolve_tokenizer`); a tokenizer the
checkpoint was not trained with is refused.

``compt eval RUN_DIR --lm-eval TASK[,…] [--lm-eval-tasks DIR]`` runs lm-evaluation-harness, offline, on every
member of a language-model run (`compt.lm.harness`; task ``held-out`` is the run's own held-out text);
``--benchmark`` runs clip_benchmark on every member of a CLIP run (`compt.clip.bench`).
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
    from compt.config import DataConfig

DEFAULT_EVAL_SAMPLES = 1000   # --eval-samples when neither given nor known from the checkpoint's run


def add_parser(sub: argparse._SubParsersAction) -> None:
    doc = ("evaluate a checkpoint (zero-shot, retrieval, linear probe; LMs: held-out loss) or a run with "
           "clip_benchmark (docs/benchmark.md)")
    p = sub.add_parser("eval", help=doc, description=doc)
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="compt or plain open_clip checkpoint (.pt)")
    p.add_argument("--data", default="synthetic", metavar="KIND",
                   help="data kind, a key of compt.clip.data.ADAPTERS (default: synthetic)")
    p.add_argument("--data-path", default="", metavar="P", help="CSV file, shard pattern, folder or dataset root")
    p.add_argument("--eval-path", default="", metavar="P", help="separate held-out CSV/shards/folder")
    p.add_argument("--model", default="", metavar="NAME", help="model name (required for plain open_clip files)")
    p.add_argument("--json", default="", metavar="OUT", help="also write the metrics as JSON to OUT")
    p.add_argument("--eval-samples", type=int, default=None, metavar="N",
                   help="held-out images, or text windows for a language model (default 1000; a language model "
                        "of a run, on the run's own corpus: the windows the run held out)")
    p.add_argument("--probe-samples", type=int, default=None, metavar="N",
                   help="labelled train images for the linear probe, 0 = no probe (default 2000)")
    p.add_argument("--tokenizer", default="", metavar="PATH",
                   help="language models: Hugging Face tokenizer folder or tokenizer.json to tokenise --data text "
                        "with (default: the one the checkpoint was trained with)")
    p.add_argument("--seed", type=int, default=0, help="data generation / split seed (default 0)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="data_set",
                   help="any data setting, e.g. --set csv_separator=tab --set root=/data (repeatable)")
    b = p.add_argument_group("clip_benchmark (pip install 'compt[bench]'): CHECKPOINT is then a RUN_DIR")
    b.add_argument("--benchmark", default="", metavar="DATASET[,DATASET…]",
                   help="evaluate every member of RUN_DIR with clip_benchmark (e.g. wds/fashion_mnist)")
    b.add_argument("--dataset-root", default="", metavar="ROOT",
                   help="folder with one folder per dataset, or a clip_benchmark template with {dataset_cleaned}")
    b.add_argument("--task", default="auto", metavar="TASK",
                   help="zeroshot_classification | zeroshot_retrieval | auto (default; wds: by dataset_type.txt)")
    b.add_argument("--workers", type=int, default=0, help="clip_benchmark data loader workers (default 0)")
    h = p.add_argument_group("lm-evaluation-harness (pip install 'compt[lmeval]'): CHECKPOINT is then a RUN_DIR")
    h.add_argument("--lm-eval", default="", metavar="TASK[,TASK…]",
                   help="evaluate every member of a language-model RUN_DIR with lm-eval, offline (held-out: the "
                        "run's own held-out text)")
    h.add_argument("--lm-eval-tasks", default="", metavar="DIR", help="a folder of your own lm-eval task YAMLs")
    p.set_defaults(func=run)


def check_numbers(args: argparse.Namespace) -> None:
    """Sizes that must be positive (or, for the probe, not negative), checked before anything is loaded."""
    for flag, value, least in (("--eval-samples", args.eval_samples, 1), ("--batch-size", args.batch_size, 1),
                               ("--probe-samples", args.probe_samples, 0)):
        if value is not None and value < least:
            raise UserError(f"{flag} must be {'positive' if least else '0 or more'}, got {value}")


def data_config(args: argparse.Namespace) -> DataConfig:
    """The `DataConfig` the command line asks for."""
    from compt.clip.data import adapter
    from compt.clip.paradigm import check_data_kind
    from compt.config import DataConfig, parse_field, validate_data

    check_numbers(args)
    whole_file = adapter(args.data).reads_path  # unknown kinds raise here
    values: dict[str, Any] = {"kind": args.data, "path": args.data_path, "eval_path": args.eval_path,
                              "eval_samples": args.eval_samples or DEFAULT_EVAL_SAMPLES, "seed": args.seed}
    if args.probe_samples is not None:  # else DataConfig's default
        values["probe_samples"] = args.probe_samples
    if whole_file and not args.eval_path:
        values["eval_path"] = args.data_path
    if whole_file and not args.data_path:
        raise UserError(f"--data {args.data} needs --data-path")
    fields = {f.name: f for f in dataclasses.fields(DataConfig)}
    for item in args.data_set:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise unknown_name("data setting", key, fields) if sep else UserError(f"--set {item!r}: use KEY=VALUE")
        values[key] = parse_field(DataConfig, key, value, f"--set {key}")
    data = DataConfig(**values)
    validate_data(data)
    check_data_kind(data)
    return data


def check_target(args: argparse.Namespace) -> str:
    """The checked ``--device`` (a one-line error when malformed or absent here), once CHECKPOINT is known to be
    a file: a folder (e.g. a run directory) is answered with what to pass instead."""
    from compt.distributed import user_device

    path = Path(args.checkpoint)
    if path.is_dir():
        example = min(path.glob("chain/*/final.pt"), default=path / "chain" / "01-…" / "final.pt")
        raise UserError(f"{path} is a folder, not a checkpoint: pass a checkpoint file such as {example}, or (CLIP "
                        f"runs) --benchmark DATASET --dataset-root ROOT, or (language-model runs) --lm-eval TASK "
                        f"to evaluate every member of a run directory")
    return str(user_device(args.device))


def load_model(path: str, model_name: str) -> tuple[Any, Any]:
    """(model, ModelConfig) from a compt or plain open_clip checkpoint."""
    from compt.checkpoint import load_checkpoint
    from compt.clip.models import create_model, get_model_config
    from compt.paradigm import paradigm_named

    ckpt = load_checkpoint(path)
    if ckpt.paradigm != "clip":
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


def run_clip_benchmark(args: argparse.Namespace) -> int:
    """`--benchmark`: clip_benchmark on every member of the run directory (`compt.clip.bench`)."""
    from compt.clip.bench import BenchmarkConfig, run_benchmark
    from compt.config import read_run_config
    from compt.paradigm import paradigm_for_run

    run_dir = Path(args.checkpoint)
    if run_dir.is_file():
        raise UserError(f"--benchmark evaluates every member of a RUN_DIR with clip_benchmark; {run_dir} is a file")
    if (run_dir / "config.toml").is_file() and paradigm_for_run(read_run_config(run_dir)).name != "clip":
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


def run_lm_harness(args: argparse.Namespace) -> int:
    """`--lm-eval`: lm-evaluation-harness on every member of a language-model run (`compt.lm.harness`)."""
    from compt.lm.harness import HARNESS_DIR, HarnessConfig, go_offline, run_harness

    go_offline()   # first: looking up the run's paradigm already imports huggingface_hub, which reads it once
    from compt.config import read_run_config
    from compt.distributed import user_device
    from compt.paradigm import paradigm_for_run

    run_dir = Path(args.checkpoint)
    if not run_dir.is_dir():
        raise UserError(f"--lm-eval evaluates every member of a RUN_DIR; {run_dir} is not a folder")
    if paradigm_for_run(read_run_config(run_dir)).name != "lm":
        raise UserError(f"{run_dir} is not a language-model run: --lm-eval evaluates compt.lm members (CLIP runs: "
                        f"--benchmark)")
    check_numbers(args)
    cfg = HarnessConfig(tasks=tuple(t.strip() for t in args.lm_eval.split(",")), include_path=args.lm_eval_tasks,
                        batch_size=args.batch_size, device=str(user_device(args.device)))
    files = run_harness(run_dir, cfg)
    print(f"{len(files)} lm-eval result files under {run_dir / HARNESS_DIR}; "
          f"`compt report {shlex.quote(str(run_dir))}` tabulates them")
    return 0


def lm_text_eval(args: argparse.Namespace, ckpt: Any) -> Any:
    """The `compt.lm.evaluate.TextEval` of ``--data text`` for checkpoint `ckpt`; options that only mean something
    for CLIP are refused, and so is a tokenizer `ckpt` was not trained with."""
    from compt.lm.evaluate import TextEval, resolve_tokenizer
    from compt.lm.text import default_corpus

    check_numbers(args)
    clip_only = [flag for flag, given in (("--model", args.model), ("--eval-path", args.eval_path),
                                          ("--set", args.data_set), ("--probe-samples", args.probe_samples),
                                          ("--benchmark", args.benchmark)) if given]
    if clip_only:
        raise UserError(f"{', '.join(clip_only)}: CLIP evaluation options, not for --data text (a language model "
                        f"describes itself; it takes --data-path FILE_OR_FOLDER [--eval-samples N] [--tokenizer FILE])")
    held = check_against_run(args)
    return TextEval(path=Path(args.data_path) if args.data_path else default_corpus(),
                    tokenizer=resolve_tokenizer(ckpt, args.tokenizer),
                    windows=args.eval_samples or held or DEFAULT_EVAL_SAMPLES)


def check_against_run(args: argparse.Namespace) -> int | None:
    """For a checkpoint inside a run, on that run's own corpus: the windows the run held out (None otherwise: no
    run, or other text), which --eval-samples must not exceed (more would score training windows)."""
    from compt.config import read_run_config
    from compt.lm.data import run_of

    run = run_of(args.checkpoint)
    if run is None:
        return None
    cfg = read_run_config(run)
    given = Path(args.data_path).resolve() if args.data_path else None
    same = given == (Path(cfg.data.path).resolve() if cfg.data.path else None)
    if same and args.eval_samples and args.eval_samples > cfg.data.eval_samples:
        raise UserError(f"--eval-samples {args.eval_samples} is more than the {cfg.data.eval_samples} windows run "
                        f"{run} held out of this corpus: the windows before them are its training data; use "
                        f"--eval-samples {cfg.data.eval_samples} or less")
    return cfg.data.eval_samples if same else None


def run_lm(args: argparse.Namespace) -> int:
    """``--data text``: held-out loss, perplexity (and bits per byte) of a language-model checkpoint."""
    from compt.checkpoint import load_checkpoint
    from compt.lm.evaluate import evaluate_text
    from compt.lm.models import require_transformers

    device = check_target(args)
    ckpt = load_checkpoint(args.checkpoint)
    if ckpt.paradigm != "lm":
        raise UserError(f"{args.checkpoint} is not a language-model checkpoint; --data text evaluates compt.lm "
                        f"models (CLIP models need image–caption data)")
    require_transformers()
    data = lm_text_eval(args, ckpt)
    start = time.perf_counter()
    metrics = evaluate_text(ckpt, data, batch_size=args.batch_size, device=device)
    suite = data.describe(ckpt.model_config.context_length)
    print(f"{ckpt.model_config.name} on {suite}")
    width = max(len(k) for k in metrics)
    print("\n".join(f"{k:<{width}}  {v:>12.6f}" if isinstance(v, float) else f"{k:<{width}}  {v:>12d}"
                    for k, v in metrics.items()))
    print(f"({time.perf_counter() - start:.1f} s; val_loss in nats/token)")
    if args.json:
        info = {"kind": "text", "path": str(data.path), "eval_samples": data.windows,
                "tokenizer": data.tokenizer.record()}
        write_json(args, ckpt.model_config.name, info, suite, metrics)
    return 0


def write_json(args: argparse.Namespace, model: str, data: dict[str, Any], suite: str, metrics: dict) -> None:
    """``--json OUT``: the metrics with what was evaluated."""
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"checkpoint": str(args.checkpoint), "model": model, "data": data, "suite": suite, "metrics": metrics}
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"written: {out}")


def run(args: argparse.Namespace) -> int:
    if args.lm_eval:   # before anything imports huggingface_hub (`run_lm_harness`)
        return run_lm_harness(args)
    if args.lm_eval_tasks:
        raise UserError("--lm-eval-tasks DIR names task folders for --lm-eval TASK[,…]; add --lm-eval")
    from compt.clip.data import build_eval_suite, evaluate

    if args.data == "text":
        return run_lm(args)
    if args.benchmark:
        return run_clip_benchmark(args)
    if args.tokenizer:
        raise UserError("--tokenizer is for language-model checkpoints (with --data text)")
    data = data_config(args)
    device = check_target(args)
    model, cfg = load_model(args.checkpoint, args.model)
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
