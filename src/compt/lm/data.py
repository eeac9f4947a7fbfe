"""A language-model run's data: a text corpus (``[data] kind = "text"``) tokenised once into ``RUN/data/``, token
shards (``"tokens"``, `compt.lm.shards`) or documents (``"documents"``, `compt.lm.corpus`).

``RUN/data/`` holds the text kind's tokens and the run's tokenizer (`compt.lm.tokenizers`: its Hugging Face
files), which each stage's Hugging Face export ``hf/`` also carries. `LMData` is the run data the chain runner
asks for training windows, the held-out evaluation and the files written beside a finished stage's final.pt
(`compt.paradigm.RunData`).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from compt.config import RunConfig
from compt.errors import UserError
from compt.lm.models import LMConfig
from compt.paradigm import chain_rules

if TYPE_CHECKING:
    from compt.lm.tokenizers import LMTokenizer


def corpus_dir(run_dir: Path) -> Path:
    """Where a run's corpus is tokenised once (`compt.lm.text`) and its tokenizer stored
    (`compt.lm.tokenizers.run_tokenizer`)."""
    return Path(run_dir) / "data"


def run_of(checkpoint: str | Path) -> Path | None:
    """The run directory of a stage checkpoint ``RUN/chain|baselines/<stage>/*.pt``; None for a loose file."""
    parents = Path(checkpoint).resolve().parents
    return parents[2] if len(parents) > 2 and (parents[2] / "config.toml").is_file() else None


def open_tokenizer(cfg: RunConfig, run_dir: Path) -> LMTokenizer:
    """The run's tokenizer (`compt.lm.tokenizers.run_tokenizer`), stored in ``RUN/data``; member 1's ``init`` must
    have been trained with it."""
    from compt.lm.text import default_corpus, documents, text_files
    from compt.lm.tokenizers import check_same, init_record, run_source, run_tokenizer

    path = cfg.data.path or default_corpus()
    tok = run_tokenizer(run_source(cfg), corpus_dir(run_dir), documents=lambda: documents(text_files(path)),
                        vocab_size=chain_rules(cfg).configs[0].vocab_size)
    init = cfg.chain[0].init
    if init:
        check_same(init_record(init), tok, f"init {init}", "; name its tokenizer in data.tokenizer (or leave "
                   "data.tokenizer unset for a Hugging Face folder's own)")
    return tok


def carves_validation(cfg: RunConfig) -> bool:
    """Whether the run's validation windows are carved out of the training windows (a member trains until a
    target and ``data.val_path`` is unset): the one answer, read by `LMData` and the stages' fingerprints."""
    from compt.stage import stops

    return stops(cfg) and not cfg.data.val_path


def validation_windows(cfg: RunConfig) -> int:
    """The validation split's windows: ``data.val_samples``, else ``data.eval_samples``."""
    return cfg.data.val_samples if cfg.data.val_samples is not None else cfg.data.eval_samples


def text_data(cfg: RunConfig, run_dir: Path, carve: bool = False, *, tokenizer: LMTokenizer) -> tuple[Any, Any, Any]:
    """(train windows, held-out windows, corpus), tokenised once with `tokenizer` into RUN/data: the last
    `eval_samples` windows of the corpus are held out, training uses the first `num_samples` windows of the rest
    (or all there are) — with `carve`, those that end before the validation windows (`compt.lm.text.validation`)."""
    from compt.lm.text import default_corpus, split, tokenize_corpus

    first = chain_rules(cfg).configs[0]   # as the run resolved it (its vocabulary may be resized)
    corpus = tokenize_corpus(cfg.data.path or default_corpus(), corpus_dir(run_dir),
                             tokenizer=tokenizer, vocab_size=first.vocab_size)
    train, held = split(corpus, first.context_length, cfg.data.eval_samples,
                        max_train=cfg.data.num_samples, reserve=validation_windows(cfg) if carve else 0)
    if 0 < len(train) < cfg.data.num_samples:
        print(f"compt: the corpus gives {len(train):,} training windows of {first.context_length} + 1 tokens, fewer "
              f"than data.num_samples = {cfg.data.num_samples:,}: training on {len(train):,} (plan prices "
              f"{cfg.data.num_samples:,})", file=sys.stderr)
    return train, held, corpus


class LMData:
    """The run's corpus, tokenised on first use: training windows, held-out loss and the ``hf/`` export; `carve`:
    the validation windows are carved out of the training windows (`carves_validation`)."""

    def __init__(self, cfg: RunConfig, run_dir: Path, carve: bool = False) -> None:
        self.cfg, self.run_dir, self.carve = cfg, Path(run_dir), carve
        self._split: tuple[Any, Any, Any] | None = None
        self._validation: Any = None
        self._tokenizer: LMTokenizer | None = None

    @property
    def tokenizer(self) -> LMTokenizer:
        """The run's tokenizer (`open_tokenizer`), resolved on first use."""
        if self._tokenizer is None:
            self._tokenizer = open_tokenizer(self.cfg, self.run_dir)
        return self._tokenizer

    def _data(self) -> tuple[Any, Any, Any]:
        if self._split is None:
            if self.cfg.data.kind == "text":
                self._split = text_data(self.cfg, self.run_dir, self.carve, tokenizer=self.tokenizer)
            else:
                from compt.lm.corpus import open_corpus

                self._split = open_corpus(self.cfg.data, chain_rules(self.cfg).configs[0],
                                          corpus_dir(self.run_dir), self.tokenizer,
                                          validation_windows(self.cfg) if self.carve else None)
            if len(self._split[0]) == 0 or len(self._split[1]) == 0:
                raise UserError("the text corpus gives an empty training or held-out split")
        return self._split

    def train_set(self, model_cfg: LMConfig) -> Any:
        return self._data()[0]

    def evaluator(self, model_cfg: LMConfig) -> Any:
        """Held-out next-token loss (``val_loss``, nats) and perplexity (``val_ppl``) over every held-out window."""
        return held_out_evaluator(self._data()[1], self.cfg.train.batch_size)

    def validator(self, model_cfg: LMConfig) -> Any:
        """The held-out loss on the validation windows (`validation_split`): what stopping probes read."""
        return held_out_evaluator(self.validation_split(), self.cfg.train.batch_size)

    def validation_split(self) -> Any:
        """The validation windows, built once and said once: the last `validation_windows` windows of
        ``data.val_path`` (tokenised with the run's tokenizer) when set, else as many just before the held-out
        split, after the last training window (`compt.lm.text.validation`). Token and document corpora: the first
        windows of ``data.val_path``, else those carved by a hash of their keys (`compt.lm.corpus`)."""
        from compt import distributed
        from compt.lm.text import held_out, tokenize_corpus, validation

        if self._validation is None:
            train, held, corpus = self._data()
            count, data = validation_windows(self.cfg), self.cfg.data
            if data.kind != "text":
                from compt.lm.corpus import validation_from

                self._validation = corpus.carved if corpus.carved is not None else \
                    validation_from(corpus, data.val_path, count)
                where = f"of data.val_path {data.val_path}" if data.val_path else \
                    "by a hash of their keys, excluded from training, disjoint from the held-out split"
            elif data.val_path:
                own = tokenize_corpus(data.val_path, corpus_dir(self.run_dir) / "val", tokenizer=self.tokenizer,
                                      vocab_size=chain_rules(self.cfg).configs[0].vocab_size)
                self._validation = held_out(own.tokens, held.context, count)
                if len(self._validation) == 0:
                    raise UserError(f"data.val_path {data.val_path} holds fewer than {held.context + 1} tokens: "
                                    f"too few for one validation window")
                where = f"of data.val_path {data.val_path}"
            else:
                self._validation = validation(train, held, count)
                where = "just before the held-out ones, excluded from training"
            distributed.say(f"validation split (until/target): {len(self._validation)} windows of "
                            f"{held.context + 1} tokens {where}")
        return self._validation

    def fingerprint(self) -> dict[str, Any]:
        """The corpus files, each with its size and content hash (the default corpus included)."""
        from compt.datafp import files_fingerprint
        from compt.lm.text import default_corpus, text_files

        if self.cfg.data.kind != "text":
            from compt.lm.corpus import corpus_fingerprint

            return corpus_fingerprint(self.cfg.data.kind, self.cfg.data.path)
        path = self.cfg.data.path or default_corpus()
        root = Path(path) if isinstance(path, (str, Path)) and Path(path).is_dir() else None
        return files_fingerprint(text_files(path), root, hashed=("",))

    @torch.no_grad()
    def representations(self, model: nn.Module, model_cfg: LMConfig) -> dict[str, torch.Tensor]:
        """Each held-out window's final hidden state (after the last RMSNorm), averaged over positions (N, d)."""
        device, out = next(model.parameters()).device, []
        for tokens, _ in DataLoader(self._data()[1], batch_size=self.cfg.train.batch_size):
            hidden = model(input_ids=tokens[:, :-1].to(device), output_hidden_states=True, use_cache=False)
            out.append(hidden.hidden_states[-1].float().mean(dim=1).cpu())
        return {"hidden": torch.cat(out)}

    def after_final(self, out_dir: Path, model_cfg: LMConfig, weights: dict[str, Any]) -> None:
        """The final weights as a Hugging Face folder ``hf/`` with the run's tokenizer."""
        from compt.lm.models import export_pretrained

        export_pretrained(model_cfg, weights, Path(out_dir) / "hf", tokenizer=self.tokenizer)

    def lineage(self) -> dict[str, Any]:
        """``tokenizer``: the run's tokenizer (`compt.lm.tokenizers.LMTokenizer.record`) in every checkpoint."""
        return {"tokenizer": self.tokenizer.record()}


@torch.no_grad()
def held_out_loss(model: nn.Module, data: Dataset, batch_size: int, device: torch.device) -> float:
    """Mean next-token cross-entropy over every held-out window (the trainer's ``val_loss``)."""
    from compt.lm.losses import lm_loss

    total, count = 0.0, 0
    for tokens, _ in DataLoader(data, batch_size=batch_size):
        tokens = tokens.to(device)
        logits = model(input_ids=tokens[:, :-1], use_cache=False).logits
        total += lm_loss(logits, tokens[:, 1:]).item() * tokens.shape[0]
        count += tokens.shape[0]
    return total / count


def held_out_evaluator(held: Dataset, batch_size: int) -> Any:
    """``evaluate(model)``: held-out loss ``val_loss`` (nats per token) and perplexity ``val_ppl`` over `held`."""

    def evaluate(model: nn.Module) -> dict[str, float]:
        loss = held_out_loss(model, held, batch_size, next(model.parameters()).device)
        return {"val_loss": loss, "val_ppl": perplexity(loss)}

    return evaluate


def perplexity(loss: float) -> float:
    """exp(loss) of a mean next-token loss in nats, capped at e^50 so a diverged model still gives a number."""
    return math.exp(min(loss, 50.0))
