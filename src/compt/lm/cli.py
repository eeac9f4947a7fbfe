"""What the CLI commands do for language models, behind the `compt.lm.paradigm` members they call: `compt grow`
and `compt prune` (a Hugging Face Llama folder read as a checkpoint; a child from a registered name or a Hugging
Face ``config.json``; the tokenizer a child inherits; the calibration windows of a text) and `compt eval` (a
checkpoint's held-out loss on a text, ``--data text``; lm-evaluation-harness on every member of a run,
``--lm-eval``).
"""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compt.errors import UserError

if TYPE_CHECKING:
    from compt.checkpoint import Checkpoint


def hf_checkpoint(folder: Path) -> Checkpoint:
    """A Hugging Face Llama folder read as a compt checkpoint (its config from config.json, its weights)."""
    from compt.checkpoint import Checkpoint
    from compt.lm.models import config_from_hf, require_transformers
    from compt.lm.tokenizers import init_record

    cfg = config_from_hf(folder)
    require_transformers()
    from transformers import AutoModelForCausalLM

    state = AutoModelForCausalLM.from_pretrained(folder).state_dict()
    record = init_record(folder)   # its own tokenizer, when it holds one
    return Checkpoint(state_dict=state, model_config=cfg, path=str(folder), paradigm="lm",
                      lineage={"tokenizer": record} if record else {})


def child_config(paradigm: Any, args: argparse.Namespace, parent_cfg: Any) -> Any:
    """The child's config: from a Hugging Face ``config.json`` (or folder) ``--to``, or a registered name grown
    from the parent (`LMParadigm.grown_config`)."""
    from compt.lm.models import config_from_hf

    if args.child.endswith(".json") or Path(args.child).is_dir():
        return config_from_hf(args.child, name=f"hf:{Path(args.child).resolve().parent.name}")
    return paradigm.grown_config(parent_cfg, args.child)


def grow_command(paradigm: Any, args: argparse.Namespace, ckpt: Checkpoint) -> int:
    """A language-model child: compt checkpoint plus a Hugging Face folder ``<out stem>-hf/`` that transformers
    loads, and the growth checked on a few random sequences (the largest logit difference to the parent)."""
    import torch

    from compt.checkpoint import save_checkpoint
    from compt.commands.grow import lineage
    from compt.lm.growth import grow_lm as grow
    from compt.lm.models import create_lm, export_pretrained, require_transformers

    require_transformers()
    if args.from_model:
        raise UserError("--from-model names the model of a plain open_clip checkpoint; a compt language-model "
                        "checkpoint carries its own config")
    parent_cfg, out = ckpt.model_config, Path(args.out)
    child_cfg = child_config(paradigm, args, parent_cfg)
    tokenizer, record = child_tokenizer(args, ckpt, child_cfg)
    state = grow(ckpt.state_dict, parent_cfg, child_cfg, args.op, args.seed)
    save_checkpoint(out, state_dict=state, model_config=child_cfg,
                    lineage=lineage(args, parent_cfg.name, **({"tokenizer": record} if record else {})))
    hf = export_pretrained(child_cfg, state, out.parent / f"{out.stem}-hf", tokenizer=tokenizer)
    ids = torch.randint(0, parent_cfg.vocab_size, (4, parent_cfg.context_length),
                        generator=torch.Generator().manual_seed(args.seed))
    with torch.no_grad():
        gap = (create_lm(child_cfg, state_dict=state).eval()(input_ids=ids).logits
               - create_lm(parent_cfg, state_dict=ckpt.state_dict).eval()(input_ids=ids).logits).abs().max().item()
    print(f"grew {parent_cfg.name} -> {child_cfg.name} with {args.op} (seed {args.seed}): {out}  [Hugging Face: {hf}]")
    print(f"check: largest |child − parent| logit on 4 random sequences = {gap:.2e}"
          + (" (function-preserving)" if gap < 1e-4 else ""))
    return 0


def child_tokenizer(args: argparse.Namespace, ckpt: Checkpoint, child_cfg: Any) -> tuple[Any, dict | None]:
    """(the tokenizer the child inherits, its lineage record): the parent's (`compt.lm.evaluate.checkpoint_tokenizer`;
    None where it cannot be found, the record then as the parent's lineage has it). A ``--to`` Hugging Face folder
    with a tokenizer other than the parent's, or a child vocabulary that does not hold the tokenizer, is refused."""
    from compt.lm.evaluate import checkpoint_tokenizer
    from compt.lm.tokenizers import TOKENIZER_FILE, check_fits, check_same, load_hf

    tokenizer = checkpoint_tokenizer(ckpt)
    record = tokenizer.record() if tokenizer is not None else ckpt.lineage.get("tokenizer")
    child = Path(args.child)
    if child.is_dir() and (child / TOKENIZER_FILE).is_file():
        check_same(record, load_hf(child), f"--from {args.parent}", "; a grown member keeps its parent's tokenizer")
    if tokenizer is not None:
        check_fits(tokenizer, {child_cfg.name: child_cfg.vocab_size})
    return tokenizer, record


def prune_pair(paradigm: Any, args: argparse.Namespace, ckpt: Checkpoint) -> tuple[Any, Any, str]:
    """(parent config, child config, a note), the pair checked (`validate_lm_prune`)."""
    from compt.lm.models import require_transformers
    from compt.lm.prune import validate_lm_prune

    require_transformers()
    if args.from_model:
        raise UserError("--from-model names the model of a plain open_clip checkpoint; a language model describes "
                        "itself")
    if args.data not in ("", "text"):
        raise UserError(f"--data {args.data}: a language model calibrates on text (--data-path FILE_OR_FOLDER)")
    parent_cfg = ckpt.model_config
    child_cfg = child_config(paradigm, args, parent_cfg)
    validate_lm_prune(parent_cfg, child_cfg)
    return parent_cfg, child_cfg, f"parent model {parent_cfg.name}"


def calibration_set(paradigm: Any, args: argparse.Namespace, ckpt: Any, parent_cfg: Any, samples: int, tmp: str
                    ) -> tuple[Any, str, Any]:
    """Every window of context + 1 tokens of the calibration text, tokenised as `compt eval --data text` does
    (with the tokenizer the parent was trained with, or ``--tokenizer`` if it is that one), and that tokenizer."""
    from compt.lm.evaluate import resolve_tokenizer
    from compt.lm.text import TokenWindows, default_corpus, tokenize_corpus

    path = Path(args.data_path) if args.data_path else default_corpus()
    tokenizer = resolve_tokenizer(ckpt, args.tokenizer)
    corpus = tokenize_corpus(path, tmp, tokenizer=tokenizer, vocab_size=parent_cfg.vocab_size)
    windows = TokenWindows(corpus.tokens, parent_cfg.context_length)
    if len(windows) == 0:
        raise UserError(f"{path} has only {corpus.tokens.size} tokens: fewer than one window of "
                        f"{parent_cfg.context_length + 1}")
    return windows, f"text {path}", tokenizer


def eval_checkpoint(paradigm: Any, args: argparse.Namespace) -> int:
    """``--data text|tokens|documents``: held-out loss, perplexity (and bits per byte) of a language-model
    checkpoint."""
    from compt.checkpoint import load_checkpoint
    from compt.commands.eval import check_target, write_json
    from compt.lm.evaluate import evaluate_text
    from compt.lm.models import require_transformers

    device = check_target(args)
    ckpt = load_checkpoint(args.checkpoint)
    if ckpt.paradigm != paradigm.name:
        raise UserError(f"{args.checkpoint} is not a language-model checkpoint; --data {args.data} evaluates compt.lm "
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
        info = {"kind": data.kind, "path": str(data.path), "eval_samples": data.windows,
                "tokenizer": data.tokenizer.record()}
        write_json(args, ckpt.model_config.name, info, suite, metrics)
    return 0


def lm_text_eval(args: argparse.Namespace, ckpt: Any) -> Any:
    """The `compt.lm.evaluate.TextEval` of ``--data text|tokens|documents`` for checkpoint `ckpt`; options that only
    mean something for CLIP are refused, and so is a tokenizer `ckpt` was not trained with. On its own run's corpus
    the run's held-out split is evaluated (its ``data.eval_samples``, ``data.seed`` and ``data.text_field``)."""
    from compt.commands.eval import DEFAULT_EVAL_SAMPLES, check_numbers
    from compt.lm.evaluate import TextEval, resolve_tokenizer
    from compt.lm.text import default_corpus

    check_numbers(args)
    clip_only = [flag for flag, given in (("--model", args.model), ("--eval-path", args.eval_path),
                                          ("--set", args.data_set), ("--probe-samples", args.probe_samples),
                                          ("--benchmark", args.benchmark)) if given]
    if clip_only:
        raise UserError(f"{', '.join(clip_only)}: CLIP evaluation options, not for --data {args.data} (a language "
                        f"model describes itself; it takes --data-path FILE_OR_FOLDER [--eval-samples N] "
                        f"[--tokenizer FILE])")
    if args.data != "text" and not args.data_path:
        raise UserError(f"--data {args.data} needs --data-path (a folder, file or glob of its files)")
    run_data = same_run_data(args)
    return TextEval(path=Path(args.data_path) if args.data_path else default_corpus(),
                    tokenizer=resolve_tokenizer(ckpt, args.tokenizer),
                    windows=args.eval_samples or (run_data.eval_samples if run_data else DEFAULT_EVAL_SAMPLES),
                    kind=args.data, seed=run_data.seed if run_data else 0,
                    text_field=run_data.text_field if run_data else None)


def same_run_data(args: argparse.Namespace) -> Any:
    """For a checkpoint inside a run, on that run's own corpus (same kind and path): the run's `DataConfig`, whose
    held-out windows --eval-samples must not exceed (more would score training windows); None otherwise."""
    from compt.config import read_run_config
    from compt.lm.data import run_of

    run = run_of(args.checkpoint)
    if run is None:
        return None
    cfg = read_run_config(run)
    given = Path(args.data_path).resolve() if args.data_path else None
    if cfg.data.kind != args.data or given != (Path(cfg.data.path).resolve() if cfg.data.path else None):
        return None
    if args.eval_samples and args.eval_samples > cfg.data.eval_samples:
        raise UserError(f"--eval-samples {args.eval_samples} is more than the {cfg.data.eval_samples} windows run "
                        f"{run} held out of this corpus: the windows before them are its training data; use "
                        f"--eval-samples {cfg.data.eval_samples} or less")
    return cfg.data


def run_harness(paradigm: Any, args: argparse.Namespace) -> int:
    """`--lm-eval`: lm-evaluation-harness on every member of a language-model run (`compt.lm.harness`)."""
    from compt.lm.harness import HARNESS_DIR, HarnessConfig, go_offline, run_harness

    go_offline()   # first: looking up the run's paradigm already imports huggingface_hub, which reads it once
    from compt.commands.eval import check_numbers
    from compt.config import read_run_config
    from compt.distributed import user_device
    from compt.paradigm import paradigm_for_run

    run_dir = Path(args.checkpoint)
    if not run_dir.is_dir():
        raise UserError(f"--lm-eval evaluates every member of a RUN_DIR; {run_dir} is not a folder")
    if paradigm_for_run(read_run_config(run_dir)) is not paradigm:
        raise UserError(f"{run_dir} is not a language-model run: --lm-eval evaluates compt.lm members (CLIP runs: "
                        f"--benchmark)")
    check_numbers(args)
    cfg = HarnessConfig(tasks=tuple(t.strip() for t in args.lm_eval.split(",")), include_path=args.lm_eval_tasks,
                        batch_size=args.batch_size, device=str(user_device(args.device)))
    files = run_harness(run_dir, cfg)
    print(f"{len(files)} lm-eval result files under {run_dir / HARNESS_DIR}; "
          f"`compt report {shlex.quote(str(run_dir))}` tabulates them")
    return 0
