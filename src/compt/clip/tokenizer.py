"""Captions → token ids with open_clip's tokenizer, through its public API, memoised for speed.

`tokenize(texts, context_length)` returns exactly ``open_clip.tokenize(texts, context_length)``: SOT, BPE ids,
EOT, zero padding, truncation with EOT kept last. `SimpleTokenizer.encode` (public) cleans the text (ftfy,
HTML unescape, whitespace, lower case) and runs BPE; the clean-up is the slow part. The tokenizer's word
pattern never matches across whitespace and the clean-up acts within whitespace-separated chunks, so a
caption's ids are the concatenation of its chunks' ids: `encode` runs once per distinct chunk (a corpus has
few) and once per distinct caption, which makes pre-tokenising a whole corpus take seconds
(benchmarks/bench_tokenizer.py, benchmarks/results/tokenizer.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

_CAPTION_CACHE_MAX = 200_000


class CachedTokenizer:
    """open_clip's `SimpleTokenizer`, its public ``encode`` memoised per whitespace chunk and per caption."""

    def __init__(self) -> None:
        from open_clip import SimpleTokenizer

        self._tok = SimpleTokenizer()
        self.sot, self.eot = self._tok.sot_token_id, self._tok.eot_token_id
        self._chunks: dict[str, list[int]] = {}
        self._captions: dict[str, list[int]] = {}

    def _chunk(self, chunk: str) -> list[int]:
        ids = self._chunks.get(chunk)
        if ids is None:
            ids = self._chunks[chunk] = self._tok.encode(chunk)
        return ids

    def encode(self, text: str) -> list[int]:
        """BPE ids of one caption, without SOT/EOT (= ``SimpleTokenizer.encode(text)``)."""
        ids = self._captions.get(text)
        if ids is None:
            ids = [i for chunk in text.split() for i in self._chunk(chunk)]
            if len(self._captions) < _CAPTION_CACHE_MAX:
                self._captions[text] = ids
        return ids

    def __call__(self, texts: Sequence[str], context_length: int) -> torch.Tensor:
        """(len(texts), context_length) int64 token ids, exactly as open_clip's tokenizer."""
        out = np.zeros((len(texts), context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.sot, *self.encode(text), self.eot]
            if len(ids) > context_length:
                ids = ids[:context_length]
                ids[-1] = self.eot
            out[row, : len(ids)] = ids
        return torch.from_numpy(out)


_TOKENIZER: CachedTokenizer | None = None


def tokenize(texts: str | Sequence[str], context_length: int) -> torch.Tensor:
    """Tokenise captions with open_clip's BPE vocabulary (49408) → LongTensor (N, context_length)."""
    global _TOKENIZER
    if _TOKENIZER is None:
        _TOKENIZER = CachedTokenizer()
    return _TOKENIZER([texts] if isinstance(texts, str) else list(texts), context_length)
