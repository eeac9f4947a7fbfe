"""Plain-text data for language models: read files, tokenise once into a memory-mapped token array.

``[data] kind = "text"``, ``path`` = a text file or a folder (every regular file below it, sorted). Each file
must be non-empty UTF-8; anything else stops with a one-line `UserError` naming the file. Documents are
joined with an end-of-document token.

The tokenizer is the run's (`compt.lm.tokenizers`: ``byte``, ``bpe`` or a Hugging Face tokenizer); each document
is encoded without special tokens and followed by the tokenizer's EOS.

The token array is written once to ``DIR/tokens.bin`` (uint16 or uint32) with ``DIR/tokens.json`` describing
it (files, sizes, tokenizer); a later run with the same files and tokenizer memory-maps it instead. The last
`eval_samples` windows are the held-out split (validation loss); the rest is cut into samples of
``context + 1`` tokens at stride ``context`` (inputs and next-token targets).

Default corpus (``data.path = ""``, `default_corpus`): the Python standard library's own source, which every
Python install carries (no download, no system package; PSF licence) — its public top-level modules
(``sysconfig.get_paths()["stdlib"]/*.py`` not starting with ``_``), sorted by name, taken while they fit in
`DEFAULT_CORPUS_BYTES` (1 MB; the LM demo trains on its first 82 k bytes, ``benchmarks/configs/lm-base.toml``
needs 164 k). The selection depends only on the Python version (3.11: ``abc.py`` … ``doctest.py``, 35 files,
0.97 MB); the token manifest lists the files. The committed language-model study was made on the reST sources of
the Python 3.11 documentation (Debian's ``python3.11-doc``: ``/usr/share/doc/python3.11/html/_sources``, 497
files, 12 MB), which lm-base.toml names as its ``data.path``.
"""

from __future__ import annotations

import json
import os
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from compt.errors import UserError

if TYPE_CHECKING:
    from compt.lm.tokenizers import LMTokenizer

DEFAULT_CORPUS_BYTES = 1_000_000    # size bound of the default corpus (module doc)


@dataclass(frozen=True)
class FileSet:
    """A fixed list of text files read as one corpus (`default_corpus`); `name` says what it is."""

    files: tuple[Path, ...]
    name: str

    def __str__(self) -> str:
        return self.name


def default_corpus() -> FileSet:
    """The standard library's public top-level modules, sorted by name, up to `DEFAULT_CORPUS_BYTES`."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files, total = [], 0
    for f in sorted(root.glob("*.py")):
        size = f.stat().st_size if f.is_file() and not f.name.startswith("_") else 0
        if total + size > DEFAULT_CORPUS_BYTES:
            break
        if size:
            files.append(f)
            total += size
    if not files:
        raise UserError(f"no Python standard-library sources in {root} for the default text corpus; set data.path "
                        f"(or --data-path) to a text file or folder")
    return FileSet(files=tuple(files), name=f"the Python standard library ({len(files)} modules of {root}, "
                                            f"{files[0].name} … {files[-1].name}, {total / 1e6:.2f} MB)")


def text_files(path: str | Path | FileSet) -> list[Path]:
    """The files of a corpus: the files of a `FileSet`, `path` itself, or every regular file below the folder,
    sorted."""
    if isinstance(path, FileSet):
        return list(path.files)
    root = Path(path)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise UserError(f"text data not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith((".dat", ".u8")))
    if not files:
        raise UserError(f"text folder {root} holds no files")
    return files


def read_document(path: Path) -> str:
    """The text of one file; empty or non-UTF-8 files are a `UserError` that names them."""
    raw = path.read_bytes()
    if not raw.strip():
        raise UserError(f"text file {path} is empty")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"text file {path} is not UTF-8 (byte {e.start}: {raw[e.start:e.start + 4]!r})") from None


def documents(files: list[Path]) -> Iterator[str]:
    for f in files:
        yield read_document(f)


# ----------------------------------------------------------------------------------------------- token array
@dataclass(frozen=True)
class TokenCorpus:
    """A tokenised corpus: the memory-mapped token array and where it is stored."""

    tokens: np.ndarray          # (N,) uint16 / uint32, memory-mapped
    directory: Path
    vocab_size: int             # tokenizer vocabulary (≤ the model's)


def _manifest(files: list[Path], tokenizer: LMTokenizer, vocab_size: int) -> dict[str, Any]:
    return {"tokenizer": tokenizer.identity, "vocab_size": vocab_size,
            "files": [[str(f), f.stat().st_size, int(f.stat().st_mtime)] for f in files]}


def tokenize_corpus(path: str | Path | FileSet, directory: str | Path, *, tokenizer: LMTokenizer | None = None,
                    vocab_size: int = 264) -> TokenCorpus:
    """Tokenise the corpus at `path` once into `directory` with `tokenizer` (`compt.lm.tokenizers`; None: the
    byte-level one), each document followed by its EOS; reused when the files and the tokenizer are unchanged."""
    from compt.lm.tokenizers import TokenizerSource, check_fits, load_tokenizer

    tok = tokenizer or load_tokenizer(TokenizerSource("byte"), vocab_size=vocab_size)
    files, directory = text_files(path), Path(directory)
    meta_path, bin_path = directory / "tokens.json", directory / "tokens.bin"
    manifest = _manifest(files, tok, vocab_size)
    if meta_path.is_file() and bin_path.is_file():
        meta = json.loads(meta_path.read_text())
        if {k: meta.get(k) for k in manifest} == json.loads(json.dumps(manifest)):
            return _open(directory, meta)
    check_fits(tok, {"the model": vocab_size})
    ids = [np.append(tok.encode(doc), tok.eos_id) for doc in documents(files)]
    dtype = np.uint16 if vocab_size <= 2**16 else np.uint32
    directory.mkdir(parents=True, exist_ok=True)
    flat = np.concatenate(ids).astype(dtype)
    tmp = bin_path.with_suffix(".bin.tmp")
    flat.tofile(tmp)
    os.replace(tmp, bin_path)
    meta = {**manifest, "dtype": np.dtype(dtype).name, "num_tokens": int(flat.size),
            "tokenizer_vocab": tok.vocab_size}
    meta_path.write_text(json.dumps(meta, indent=2))
    return _open(directory, meta)


def _open(directory: Path, meta: dict[str, Any]) -> TokenCorpus:
    tokens = np.memmap(directory / "tokens.bin", dtype=meta["dtype"], mode="r", shape=(meta["num_tokens"],))
    return TokenCorpus(tokens=tokens, directory=directory, vocab_size=int(meta["tokenizer_vocab"]))


class TokenWindows(Dataset):
    """Non-overlapping windows of ``context + 1`` tokens over tokens[start:stop]; item = (tokens, index)."""

    deterministic = True

    def __init__(self, tokens: np.ndarray, context: int, start: int = 0, stop: int | None = None) -> None:
        self.tokens, self.context, self.start = tokens, context, start
        stop = tokens.size if stop is None else stop
        self.n = max(0, (stop - start - 1) // context)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        a = self.start + i * self.context
        return torch.from_numpy(self.tokens[a:a + self.context + 1].astype(np.int64)), i


def split(corpus: TokenCorpus, context: int, eval_windows: int, max_train: int | None = None, reserve: int = 0
          ) -> tuple[TokenWindows, TokenWindows]:
    """(train, held-out) windows: the held-out split is the last `eval_windows` windows of the corpus
    (`held_out`); training uses the first `max_train` windows of the rest (all when None) that end before the
    `reserve` windows just before the held-out split (a validation split carved out of training, `validation`)."""
    n, need = corpus.tokens.size, eval_windows * context + 1
    if n < 2 * (context + 1) or need >= n - (context + 1):
        raise UserError(f"the text corpus in {corpus.directory} has only {n} tokens: too few for a train and a "
                        f"held-out split of {eval_windows} windows of {context} tokens")
    held = held_out(corpus.tokens, context, eval_windows)
    end = held.start - (reserve * context + 1) if reserve else held.start
    if end < context + 1:
        raise UserError(f"the text corpus in {corpus.directory} has only {n} tokens: too few for a train, a "
                        f"validation split of {reserve} and a held-out split of {eval_windows} windows of {context} "
                        f"tokens; lower data.val_samples or set data.val_path")
    stop = end if max_train is None else min(end, max_train * context + 1)
    return TokenWindows(corpus.tokens, context, 0, stop), held


def validation(train: TokenWindows, held: TokenWindows, windows: int) -> TokenWindows:
    """The `windows` windows just before the held-out split, after the last training token: the validation split
    stopping probes read (`compt.train.stopping`); a `UserError` when training reaches into them."""
    start = held.start - (windows * held.context + 1)
    train_end = train.start + len(train) * train.context + 1
    if start < train_end:
        raise UserError(f"until/target stopping needs {windows} validation windows between the training windows "
                        f"and the held-out split, and the corpus has no room: lower data.num_samples to at most "
                        f"{max(0, (start - 1) // train.context):,}")
    return TokenWindows(train.tokens, held.context, start, held.start)


def held_out(tokens: np.ndarray, context: int, windows: int) -> TokenWindows:
    """The last `windows` windows of `context` (+1 shifted target) tokens — the last windows·context + 1 tokens,
    at least one window; the whole array when shorter: the held-out split of `split`, and what
    `compt eval --data text` evaluates."""
    return TokenWindows(tokens, context, max(0, tokens.size - (max(windows, 1) * context + 1)), tokens.size)
