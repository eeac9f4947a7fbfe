"""EleutherAI's lm-evaluation-harness as an evaluation backend for language-model runs (`compt eval RUN_DIR
--lm-eval TASK[,…]`; extra ``compt[lmeval]``).

Every finished member of a run (chain stages and baselines, `compt.export.run_members`) is exported as a Hugging
Face folder (`compt.export.export_run`, into a temporary folder) and evaluated by lm-eval's Python API
(`lm_eval.simple_evaluate`, its ``hf`` model in fp32 at the members' context length), fully offline:
``HF_HUB_OFFLINE`` and ``HF_DATASETS_OFFLINE`` are set before `datasets` and `lm_eval` are imported
(`go_offline`). Tasks are lm-eval's by name, the ones in the user's own task folder (``--lm-eval-tasks DIR``,
lm-eval's ``include_path``), or compt's ``held-out``. Layout inside the run directory::

    RUN/lm_eval/held-out/held-out.yaml   the ``held-out`` task (lm-eval task YAML, written as JSON, which YAML reads)
    RUN/lm_eval/held-out/held_out.jsonl  its one document; held_out.json: what compt knows about it (below)
    RUN/lm_eval/members.json             the members evaluated: key, model, methods
    RUN/lm_eval/<member>/results.json    lm-eval's own output (results, configs, versions, …) over every task,
                                         plus ``compt_member`` (the export's provenance)

``<member>`` is the member's folder in the run (``chain/02-lm_test-B``, ``baselines/lm_test-B``).

The ``held-out`` task is the run's own held-out split (`compt.lm.data.text_data`, the windows the trainer's
``val_loss`` averages over) as one ``loglikelihood_rolling`` document. The split is W windows of C + 1 tokens at
stride C over the tokens h_0 … h_{WC} (`compt.lm.text.held_out`), and

    val_loss  L = −(1 / WC) Σ_{j=1}^{WC} log p(h_j | h_{s(j)} … h_{j−1}),   s(j) = C·⌊(j − 1) / C⌋ (its window's start).

The document is the text of h_1 … h_{WC} and lm-eval's prefix token (``prefix_token_id``) is h_0. lm-eval's
rolling windows at ``max_length`` C (`lm_eval.utils.get_rolling_token_windows`, context 1) are then exactly
compt's: the first scores h_1 … h_C given [h_0, h_1 … h_{C−1}], each next one the following C tokens given the C
tokens before them. Its log-likelihood of the document is therefore −WC·L and, with B the document's UTF-8
bytes and n_w its words (lm-eval's whitespace count),

    bits_per_byte = WC·L / (B ln 2),   byte_perplexity = exp(WC·L / B),   word_perplexity = exp(WC·L / n_w).

(An end-of-document token inside the split decodes to ``<eos>``: one token, five bytes.) This holds when
encoding the document gives back h_1 … h_{WC}: always for the byte-level tokenizer on text that the split does
not cut inside a UTF-8 character; for BPE only when the cut falls between tokens. ``held_out.json`` records
``same_tokens``; ``tokens``, ``bytes``, ``words`` and ``prefix_token_id``. The ``held-out`` task runs in its own
`simple_evaluate` call (the prefix token is a model argument); the other tasks keep lm-eval's default prefix.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from compt.errors import UserError

HARNESS_DIR = "lm_eval"
HELD_OUT = "held-out"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
# lm-eval's own metrics of a rolling log-likelihood task (as its wikitext task declares them)
ROLLING_METRICS = ({"metric": "word_perplexity", "aggregation": "weighted_perplexity", "higher_is_better": False},
                   {"metric": "byte_perplexity", "aggregation": "weighted_perplexity", "higher_is_better": False},
                   {"metric": "bits_per_byte", "aggregation": "bits_per_byte", "higher_is_better": False})
MERGED_KEYS = ("results", "groups", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better",
               "n-samples")   # lm-eval output keys that are dicts by task: one member's calls are merged


@dataclass(frozen=True, kw_only=True)
class HarnessConfig:
    """What `compt eval --lm-eval` runs: lm-eval task names, the user's task folder, batch size and device."""

    tasks: tuple[str, ...]
    include_path: str = ""      # a folder of lm-eval task YAMLs (``--lm-eval-tasks``), or "" for none
    batch_size: int = 64
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not self.tasks or not all(self.tasks):
            raise UserError("--lm-eval needs one or more task names, comma separated (e.g. --lm-eval held-out)")
        if self.include_path and not Path(self.include_path).is_dir():
            raise UserError(f"--lm-eval-tasks {self.include_path}: no such folder")


@dataclass(frozen=True, kw_only=True)
class HeldOutTask:
    """The ``held-out`` task written into a run (module docstring): its folder and the numbers behind it."""

    folder: Path
    prefix_token_id: int       # h_0, the token before the document
    windows: int               # W
    context: int               # C
    tokens: int                # W·C, the tokens lm-eval scores
    bytes: int                 # B, the document's UTF-8 bytes
    words: int                 # n_w, lm-eval's word count of the document (its pieces between whitespace runs)
    same_tokens: bool          # encoding the document gives back h_1 … h_{WC}


def go_offline() -> None:
    """No network for lm-eval: effective when set before `datasets` / `huggingface_hub` are first imported (they
    read it once then); `compt eval --lm-eval` sets it first thing."""
    os.environ.update(OFFLINE)


def require_lm_eval() -> None:
    """`UserError` with the install hint when the optional ``compt[lmeval]`` extra is missing."""
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise UserError("lm-evaluation-harness is not installed: pip install 'compt[lmeval]' "
                        "(lm-eval, accelerate)") from None


def write_held_out_task(run_dir: Path, cfg: Any, context: int) -> HeldOutTask:
    """Write the ``held-out`` task (YAML + JSONL + held_out.json) of run `run_dir` (config `cfg`)."""
    from compt.lm.data import open_tokenizer, text_data

    tok = open_tokenizer(cfg, run_dir)
    _, held, corpus = text_data(cfg, run_dir, tokenizer=tok)
    ids = [int(t) for t in corpus.tokens[held.start:held.start + len(held) * context + 1]]   # h_0 … h_{WC}
    text = tok.decode(ids[1:])
    folder = Path(run_dir) / HARNESS_DIR / HELD_OUT
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "held_out.jsonl").write_text(json.dumps({"text": text}) + "\n")
    (folder / f"{HELD_OUT}.yaml").write_text(json.dumps(task_yaml(folder), indent=2) + "\n")
    task = HeldOutTask(folder=folder, prefix_token_id=ids[0], windows=len(held), context=context,
                       tokens=len(ids) - 1, bytes=len(text.encode("utf-8")), words=len(re.split(r"\s+", text)),
                       same_tokens=tok.backend.encode(text, add_special_tokens=False).ids == ids[1:])
    (folder / "held_out.json").write_text(json.dumps(asdict(task) | {"folder": str(folder)}, indent=2) + "\n")
    return task


def task_yaml(folder: Path) -> dict[str, Any]:
    """lm-eval's task config of ``held-out``: one rolling log-likelihood document read by `datasets`' json
    builder, cached inside the run."""
    return {"task": HELD_OUT, "dataset_path": "json", "output_type": "loglikelihood_rolling",
            "dataset_kwargs": {"data_files": {"test": str((folder / "held_out.jsonl").resolve())},
                               "cache_dir": str((folder / "cache").resolve())},
            "test_split": "test", "doc_to_text": "", "doc_to_target": "text",
            "metric_list": list(ROLLING_METRICS), "metadata": {"version": 1.0}}


def task_manager(tasks: list[str], include_path: list[str]) -> Any:
    """An `lm_eval.tasks.TaskManager` that knows every name in `tasks`: the included folders only when they
    declare them all (indexing lm-eval's few thousand built-in task files takes seconds), else with lm-eval's
    own tasks too; a name neither knows is a `UserError`."""
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=include_path, include_defaults=False) if include_path else None
    if manager is None or not set(tasks) <= set(manager.all_tasks):
        manager = TaskManager(include_path=include_path or None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise UserError(f"lm-eval knows no task {', '.join(unknown)}: give lm-eval task names, {HELD_OUT}, or tasks "
                        f"of --lm-eval-tasks DIR (offline: their datasets must already be cached)")
    return manager


def evaluate_member(folder: Path, calls: list[tuple[list[str], Any, int | None]], cfg: HarnessConfig,
                    context: int) -> dict[str, Any]:
    """lm-eval's output for one exported member: one `simple_evaluate` per (tasks, task manager, prefix token)
    call, merged into one output."""
    import lm_eval

    outputs = []
    for tasks, manager, prefix in calls:
        args: dict[str, Any] = {"pretrained": str(folder), "max_length": context, "dtype": "float32"}
        if prefix is not None:
            args["prefix_token_id"] = prefix
        outputs.append(lm_eval.simple_evaluate(model="hf", model_args=args, tasks=tasks, task_manager=manager,
                                               batch_size=cfg.batch_size, device=cfg.device, log_samples=False))
    merged = dict(outputs[0])
    for out in outputs[1:]:
        for key in MERGED_KEYS:
            merged[key] = {**merged.get(key, {}), **out.get(key, {})}
    return merged


def run_harness(run_dir: str | Path, cfg: HarnessConfig) -> list[Path]:
    """Export every member of `run_dir`, evaluate each with lm-eval; returns the results.json files."""
    from compt.config import read_run_config
    from compt.export import PROVENANCE_FILE, export_run
    from compt.lm.models import get_lm_config

    go_offline()
    require_lm_eval()
    from lm_eval.utils import handle_non_serializable  # JSON of NumPy scalars, sets, functions in its output

    run_dir = Path(run_dir)
    run_cfg = read_run_config(run_dir)
    context = get_lm_config(run_cfg.chain[0].model).context_length   # every member's (`LMParadigm.chain_rules`)
    others = [t for t in cfg.tasks if t != HELD_OUT]
    calls = [(others, task_manager(others, [cfg.include_path] if cfg.include_path else []), None)] if others else []
    if HELD_OUT in cfg.tasks:   # its own call: the prefix token is a model argument
        held = write_held_out_task(run_dir, run_cfg, context)
        calls.insert(0, ([HELD_OUT], task_manager([HELD_OUT], [str(held.folder)]), held.prefix_token_id))
    root, files = run_dir / HARNESS_DIR, []
    with tempfile.TemporaryDirectory(prefix="compt-lmeval-") as tmp:
        members = export_run(run_dir, tmp)
        for member, folder in members:
            out = evaluate_member(folder, calls, cfg, context)
            out["compt_member"] = json.loads((folder / PROVENANCE_FILE).read_text())
            text = json.dumps(out, indent=2, default=handle_non_serializable)
            path = root / member.key / "results.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(run_relative(text, {tmp: "exported", str(run_dir.resolve()): "."}) + "\n")
            files.append(path)
    index = [asdict(m) for m, _ in members]
    (root / "members.json").write_text(json.dumps({"run": "..", "members": index}, indent=2) + "\n")
    return files


def run_relative(text: str, prefixes: dict[str, str]) -> str:
    """`text` (a JSON record) with each absolute folder of `prefixes` replaced by its stand-in (the run: ".", the
    temporary export folder: "exported"), so a committed record names no path of the machine that made it."""
    for prefix, stand_in in prefixes.items():
        text = text.replace(json.dumps(prefix)[1:-1] + "/", stand_in + "/")
    return text
