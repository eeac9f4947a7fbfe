"""The language models' own run-config settings: `LMDataConfig`, their `[data]` table (`Paradigm.data_options`).

The keys sit in the run config's flat `[data]` table beside the shared ones (`compt.settings.DataConfig`); a chain
of language models parses that table into this class (docs/lm.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from compt.settings import DataConfig


@dataclass(frozen=True, kw_only=True)
class LMDataConfig(DataConfig):
    """A text corpus, token shards or documents, and the tokenizer that reads them."""

    tokenizer: str | None = None       # byte (default) | bpe (trained to the model's vocabulary) | a Hugging Face
                                       # tokenizer folder or tokenizer.json (unset: an init folder's own)
    text_field: str | None = None      # kind "documents": the JSON field / column of each document's text (None: text)
