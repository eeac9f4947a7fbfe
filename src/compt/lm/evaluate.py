"""Held-out evaluation of a language-model checkpoint on a text file or folder (`compt eval --data text`).

The text goes through the training pipeline (`compt.lm.text.tokenize_corpus`, into a temporary folder) and
the loss is the trainer's own (`compt.lm.data.held_out_loss`) over `compt.lm.text.held_out` windows: the
last ``windows · context + 1`` tokens of the corpus, as windows of ``context + 1`` tokens at stride ``context``. With
the corpus and ``data.eval_samples`` of a run this is exactly that run's held-out split, so the numbers equal
the ``val_loss`` its stages recorded.

Metrics, with L the mean next-token cross-entropy in nats over the N predicted tokens:

    val_loss = L,   val_ppl = exp(L),   bits_per_byte = L / ln 2   (byte-level tokenizer only: one token is one
                                                                    byte; end-of-document tokens count as bytes)

The tokenizer: byte-level by default; for a checkpoint inside a run whose tokenizer is BPE, the
``tokenizer.json`` that run stored (`compt.lm.data.run_tokenizer`); an explicit tokenizer file overrides both.
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


@dataclass(frozen=True)
class TextEval:
    """What to evaluate on: corpus path, tokenizer kind and (for stored tokenizers) its file, windows."""

    path: Path | FileSet            # a text file or folder, or the default corpus (`compt.lm.text`)
    tokenizer: str                  # "byte" | "bpe" (`compt.lm.text.TOKENIZERS`)
    tokenizer_file: Path | None     # a stored tokenizer.json (BPE or an explicit one); None = byte-level
    windows: int                    # evaluate the corpus's last `windows` windows

    def describe(self, context: int) -> str:
        tok = f"tokenizer {self.tokenizer_file}" if self.tokenizer_file else "byte-level tokenizer"
        return f"text {self.path} (its last {self.windows} windows of {context} + 1 tokens, {tok})"


def resolve_tokenizer(checkpoint: str | Path, override: str = "") -> tuple[str, Path | None]:
    """(kind, tokenizer file) for evaluating `checkpoint`: `override`, else its run's BPE tokenizer, else bytes."""
    from compt.lm.data import run_of, run_tokenizer

    if override:
        if not Path(override).is_file():
            raise UserError(f"--tokenizer {override}: no such file")
        return "bpe", Path(override)
    run = run_of(checkpoint)
    if run is None:
        return "byte", None
    kind, file = run_tokenizer(run)
    if kind == "byte":
        return "byte", None
    if not file.is_file():
        raise UserError(f"{checkpoint}: its run {run} uses a {kind} tokenizer but {file} is missing; "
                        f"pass --tokenizer FILE")
    return kind, file


def evaluate_text(ckpt: Checkpoint, data: TextEval, *, batch_size: int, device: str) -> dict[str, Any]:
    """Held-out metrics (module docstring) of the language model in `ckpt` on `data`."""
    from compt.lm.data import held_out_loss, perplexity
    from compt.lm.models import create_lm
    from compt.lm.text import held_out, tokenize_corpus

    cfg, context = ckpt.model_config, ckpt.model_config.context_length
    with tempfile.TemporaryDirectory(prefix="compt-eval-") as tmp:
        corpus = tokenize_corpus(data.path, tmp, tokenizer=data.tokenizer, vocab_size=cfg.vocab_size,
                                 tokenizer_file=data.tokenizer_file)
        windows = held_out(corpus.tokens, context, data.windows)
        if len(windows) == 0:
            raise UserError(f"{data.path} has only {corpus.tokens.size} tokens: fewer than one window of "
                            f"{context + 1} tokens")
        model = create_lm(cfg, state_dict=ckpt.state_dict).to(device).eval()
        loss = held_out_loss(model, windows, batch_size, torch.device(device))
    metrics: dict[str, Any] = {"val_loss": loss, "val_ppl": perplexity(loss)}
    if data.tokenizer == "byte":
        metrics["bits_per_byte"] = loss / math.log(2)
    return {**metrics, "tokens": len(windows) * context, "windows": len(windows)}
