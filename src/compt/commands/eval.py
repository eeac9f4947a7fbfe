"""`compt eval CHECKPOINT --data KIND [--data-path P] [--model NAME] [--json OUT]`.

Evaluates a compt checkpoint (its model config is inside) or a plain open_clip checkpoint (then
``--model NAME`` says which shape it has) on a data kind's evaluation suite: zero-shot top-1/top-5,
retrieval recall@1/5/10, linear probe. Prints a table; ``--json`` also writes the metrics.

For ``csv``, ``wds`` and ``folder`` the file(s) named by ``--data-path`` are evaluated whole (unless
``--eval-path`` names a separate held-out set); for ``fashion-mnist`` and ``openclipart`` ``--data-path``
overrides the dataset folder. Other data settings: ``--set key=value`` (any `[data]` key of CLIP models,
docs/configs.md).

A language-model checkpoint (`compt.lm`; its stored config says so) evaluates on ``--data text --data-path
FILE_OR_FOLDER`` (default: `compt.lm.text.default_corpus`, the standard library's sources): held-out loss
(nats/token), perplexity, bits per byte (byte-level tokenizer) and the token count over the last
``--eval-samples`` windows of the text (`compt.lm.evaluate`; with a run's corpus and ``data.eval_samples`` that
is the run's own held-out split); on ``--data tokens|documents --data-path P`` (a token-shard folder, a
document corpus) the held-out split of that corpus as a run takes it (the checkpoint's run's ``data.seed`` and
``data.eval_samples`` on its own corpus). ``--tokenizer FOLDER_OR_FILE`` (a Hugging Face tokenizer) overrides
the tokenizer (default: the one the checkpoint was trained with, `compt.lm.evaluate.resolve_tokenizer`); a tokenizer the
checkpoint was not trained with is refused.

``compt eval RUN_DIR --lm-eval TASK[,…] [--lm-eval-tasks DIR]`` runs lm-evaluation-harness, offline, on every
member of a language-model run (`compt.lm.harness`; task ``held-out`` is the run's own held-out text);
``--benchmark`` runs clip_benchmark on every member of a CLIP run (`compt.clip.bench`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compt.errors import UserError

if TYPE_CHECKING:
    from compt.paradigm import Paradigm

DEFAULT_EVAL_SAMPLES = 1000   # --eval-samples when neither given nor known from the checkpoint's run
DEFAULT_DATA = "synthetic"    # --data when not given


def add_parser(sub: argparse._SubParsersAction) -> None:
    doc = ("evaluate a checkpoint (zero-shot, retrieval, linear probe; LMs: held-out loss) or a run with "
           "clip_benchmark (docs/benchmark.md)")
    p = sub.add_parser("eval", help=doc, description=doc)
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="compt or plain open_clip checkpoint (.pt)")
    p.add_argument("--data", default=None, metavar="KIND",
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


def write_json(args: argparse.Namespace, model: str, data: dict[str, Any], suite: str, metrics: dict) -> None:
    """``--json OUT``: the metrics with what was evaluated."""
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"checkpoint": str(args.checkpoint), "model": model, "data": data, "suite": suite, "metrics": metrics}
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"written: {out}")


def data_paradigm(kind: str) -> Paradigm | None:
    """The first paradigm (built-ins first) whose `Paradigm.eval_data_kinds` hold `kind`; None: no paradigm's."""
    from compt.paradigm import paradigms

    return next((p for p in paradigms() if kind in p.eval_data_kinds()), None)


def run(args: argparse.Namespace) -> int:
    """Dispatch through the paradigms: a run-directory option (`Paradigm.eval_tools`, e.g. ``--benchmark``,
    ``--lm-eval``) goes to its paradigm unless ``--data`` names a kind that another paradigm evaluates, not it;
    otherwise the checkpoint's own paradigm when it evaluates ``--data``, else the paradigm that evaluates
    ``--data`` (default synthetic; an unknown kind: the default's, which names the kinds) evaluates the checkpoint
    (and refuses another paradigm's options). The tool's own paradigm is asked first: lm-eval must go offline
    before the image–caption data modules import huggingface_hub."""
    from compt.paradigm import paradigms

    for p in paradigms():
        for tool in p.eval_tools():
            if getattr(args, tool) and (args.data is None or args.data in p.eval_data_kinds()
                                        or data_paradigm(args.data) is None):
                return p.eval_run(args, tool)
    if args.lm_eval_tasks:
        raise UserError("--lm-eval-tasks DIR names task folders for --lm-eval TASK[,…]; add --lm-eval")
    args.data = args.data if args.data is not None else DEFAULT_DATA
    own = checkpoint_paradigm(Path(args.checkpoint))
    if own is not None and args.data in own.eval_data_kinds():
        return own.eval_checkpoint(args)
    return (data_paradigm(args.data) or data_paradigm(DEFAULT_DATA)).eval_checkpoint(args)


def checkpoint_paradigm(path: Path) -> Paradigm | None:
    """The paradigm a compt checkpoint file names (None: not a file, or not readable here: the evaluating
    paradigm reports that)."""
    from compt.checkpoint import load_checkpoint
    from compt.paradigm import paradigm_named

    if not path.is_file():
        return None
    try:
        return paradigm_named(load_checkpoint(path, mmap=True).paradigm)
    except UserError:
        return None
