"""Held-out evaluation of a language-model checkpoint on a text file or folder (`compt eval --data text`), a token
shard folder (``--data tokens``) or a document corpus (``--data documents``: JSONL, Parquet, a ``datasets`` folder).

Token and document corpora are opened as a run opens them (`compt.lm.corpus.open_corpus`) and the held-out split
is the run's: ``windows`` windows (or documents) chosen by a hash of their keys with seed ``seed``; with a run's
corpus, ``data.seed`` and ``data.eval_samples`` the numbers equal the ``val_loss`` its stages recorded.

Text goes through the training pipeline (`compt.lm.text.tokenize_corpus`, into a temporary folder) and
the loss is the trainer's own (`compt.lm.data.held_out_loss`) over `compt.lm.text.held_out` windows: the
last ``windows · context + 1`` tokens of the corpus, as windows of ``context + 1`` tokens at stride ``context``. With
the corpus and ``data.eval_samples`` of a run this is exactly that run's held-out split, so the numbers equal
the ``val_loss`` its stages recorded.

Metrics, with L the mean next-token cross-entropy in nats over the N predicted tokens:

    val_loss = L,   val_ppl = exp(L),   bits_per_byte = L / ln 2   (byte-level tokenizer only: one token is one
                                                                    byte; end-of-document tokens count as bytes)

The tokenizer (`resolve_tokenizer`): ``--tokenizer`` (a Hugging Face tokenizer folder or tokenizer.json), else the
one the checkpoint was trained with (`checkpoint_tokenizer`: its run's stored tokenizer, or the one its lineage
records where that can be had without the run), else byte-level. A tokenizer other than the one the checkpoint's
lineage (or its run) records is refused (`compt.lm.tokenizers.check_same`).
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from compt.checkpoint import Checkpoint
from compt.errors import UserError

if TYPE_CHECKING:
    from compt.lm.text import FileSet
    from compt.lm.tokenizers import LMTokenizer


@dataclass(frozen=True)
class TextEval:
    """What to evaluate on: corpus path, tokenizer, windows."""

    path: Path | FileSet            # a text file or folder, or the default corpus (`compt.lm.text`)
    tokenizer: LMTokenizer
    windows: int                    # evaluate the corpus's last `windows` windows (text), its held-out split (others)
    kind: str = "text"              # text | tokens | documents
    seed: int = 0                   # tokens / documents: the split's hash seed (a run's data.seed)
    text_field: str | None = None   # documents: the field of each document's text (None: text)

    @property
    def num_samples(self) -> int:
        """`compt.lm.corpus.open_corpus` reads this as a `DataConfig`: no training windows are taken."""
        return 0

    @property
    def eval_samples(self) -> int:
        return self.windows

    def describe(self, context: int) -> str:
        which = (f"its last {self.windows} windows" if self.kind == "text"
                 else f"its held-out split: {self.windows} windows by a hash with seed {self.seed}")
        return (f"{self.kind} {self.path} ({which} of {context} + 1 tokens, {self.tokenizer.kind} "
                f"tokenizer {self.tokenizer.name})")


def checkpoint_tokenizer(ckpt: Checkpoint) -> LMTokenizer | None:
    """The tokenizer `ckpt` was trained with: its run's stored one (checked against the checkpoint's lineage), else
    the one its lineage records where that can be had without the run (`compt.lm.tokenizers.recorded_tokenizer`);
    None when it cannot be found (a loose checkpoint of earlier versions records none)."""
    from compt.config import read_run_config
    from compt.lm.data import corpus_dir, run_of
    from compt.lm.tokenizers import check_same, recorded_tokenizer, run_source, stored_tokenizer

    record = ckpt.lineage.get("tokenizer")
    run = run_of(ckpt.path) if ckpt.path else None
    kind = run_source(read_run_config(run)).kind if run is not None else "byte"
    stored = stored_tokenizer(corpus_dir(run), kind) if run is not None else None
    if stored is not None:
        check_same(record, stored, ckpt.path, f"; the tokenizer stored in {corpus_dir(run)} was replaced")
        return stored
    return recorded_tokenizer(record or ({"kind": kind} if run is not None else None))


def resolve_tokenizer(ckpt: Checkpoint, override: str = "") -> LMTokenizer:
    """The tokenizer to evaluate `ckpt` with: `override`, else `checkpoint_tokenizer` (byte-level for a loose
    checkpoint that records none); one the checkpoint was not trained with is refused."""
    from compt.lm.data import run_of
    from compt.lm.tokenizers import TokenizerSource, check_same, load_hf, load_tokenizer

    trained = checkpoint_tokenizer(ckpt)
    if override:
        if not Path(override).exists():
            raise UserError(f"--tokenizer {override}: no such file or folder")
        tok = load_hf(override)
        check_same(ckpt.lineage.get("tokenizer") or (trained.record() if trained else None), tok, ckpt.path)
        return tok
    if trained is not None:
        return trained
    rec = ckpt.lineage.get("tokenizer")
    if not rec and run_of(ckpt.path) is None:   # a loose file of earlier versions
        return load_tokenizer(TokenizerSource("byte"), vocab_size=0)
    raise UserError(f"{ckpt.path} was trained with the {(rec or {}).get('kind', 'run')} tokenizer "
                    f"{(rec or {}).get('name', '')}, which is not at hand; pass --tokenizer FOLDER_OR_FILE")


def evaluate_text(ckpt: Checkpoint, data: TextEval, *, batch_size: int, device: str) -> dict[str, Any]:
    """Held-out metrics (module docstring) of the language model in `ckpt` on `data`."""
    from compt.lm.data import held_out_loss, perplexity
    from compt.lm.models import create_lm
    from compt.lm.text import held_out, tokenize_corpus

    cfg, context = ckpt.model_config, ckpt.model_config.context_length
    with tempfile.TemporaryDirectory(prefix="compt-eval-") as tmp:
        if data.kind == "text":
            corpus = tokenize_corpus(data.path, tmp, tokenizer=data.tokenizer, vocab_size=cfg.vocab_size)
            windows = held_out(corpus.tokens, context, data.windows)
            if len(windows) == 0:
                raise UserError(f"{data.path} has only {corpus.tokens.size} tokens: fewer than one window of "
                                f"{context + 1} tokens")
        else:
            from compt.lm.corpus import open_corpus

            _, windows, _ = open_corpus(data, cfg, Path(tmp), data.tokenizer, carve=None)
        model = create_lm(cfg, state_dict=ckpt.state_dict).to(device).eval()
        loss = held_out_loss(model, windows, batch_size, torch.device(device))
    metrics: dict[str, Any] = {"val_loss": loss, "val_ppl": perplexity(loss)}
    if data.tokenizer.kind == "byte":
        metrics["bits_per_byte"] = loss / math.log(2)
    return {**metrics, "tokens": len(windows) * context, "windows": len(windows)}
