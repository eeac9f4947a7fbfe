"""A language-model run's tokenizer: compt's byte-level and BPE tokenizers and Hugging Face tokenizers, one API.

``[data] tokenizer`` (`tokenizer_source`, resolved once per run by `run_source`):

- ``"byte"`` (the default): 256 byte tokens (id = the byte) + ``<eos>`` (id 256); nothing to train;
- ``"bpe"``: a byte-level BPE that compt trains on the run's training documents up to the model's vocabulary;
- a path: a Hugging Face tokenizer — a folder as ``save_pretrained`` writes it (``tokenizer.json``,
  ``tokenizer_config.json``, ``special_tokens_map.json``; read with ``transformers.AutoTokenizer``, offline) or a
  ``tokenizer.json`` file (read with ``tokenizers.Tokenizer.from_file``);
- unset, with member 1's ``init`` a Hugging Face folder holding a ``tokenizer.json``: that folder's tokenizer.

Every tokenizer is an `LMTokenizer`: ``encode(text)`` gives the ids of one document without special tokens (no
BOS; a run puts ``eos_id`` after every document), ``vocab_size`` is the size of its id range (the largest id + 1,
added tokens included) and ``identity`` is the sha256 of its canonical ``tokenizer.json`` (`identity_of`: the
JSON with sorted keys, its padding, truncation and post-processor left out): two tokenizers with the same
identity encode every document alike. EOS is the tokenizer's own ``eos_token`` (tokenizer_config.json), else
the first of `EOS_CANDIDATES` its vocabulary holds; a tokenizer with neither is a one-line `UserError`.

A run stores its tokenizer once, beside its tokens in ``RUN/data/`` (`LMTokenizer.save`: the Hugging Face files
plus ``compt_tokenizer.json``, its `LMTokenizer.record`), and every checkpoint's lineage records it under
``tokenizer``; exports carry the stored files, so ``AutoTokenizer.from_pretrained(export)`` loads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from compt.errors import UserError

EOS = "<eos>"                        # end of document of the byte and BPE tokenizers
TOKENIZER_FILE = "tokenizer.json"    # the tokenizers library's file; transformers reads it too
RECORD_FILE = "compt_tokenizer.json"  # `LMTokenizer.record` beside a stored tokenizer
BUILTIN = ("byte", "bpe")
EOS_CANDIDATES = (EOS, "</s>", "<|endoftext|>", "<|end_of_text|>")   # tried in this order without an eos_token


@dataclass(frozen=True)
class TokenizerSource:
    """Where a run's tokenizer comes from: ``byte``, ``bpe`` or ``hf`` (a folder or tokenizer.json at `path`)."""

    kind: str
    path: Path | None = None

    def __str__(self) -> str:
        return f"{self.path}" if self.path is not None else self.kind


def tokenizer_source(setting: str | None, init: str | None = None) -> TokenizerSource:
    """The source named by ``data.tokenizer`` = `setting`; unset: member 1's `init` folder when it holds a
    ``tokenizer.json``, else ``byte``."""
    if setting in BUILTIN:
        return TokenizerSource(setting)
    if setting:
        path = Path(setting).expanduser()
        if not path.exists():
            raise UserError(f"unknown tokenizer {setting!r} (data.tokenizer): neither byte, bpe nor an existing "
                            f"Hugging Face tokenizer folder or tokenizer.json")
        return TokenizerSource("hf", path)
    if init and Path(init).is_dir() and (Path(init) / TOKENIZER_FILE).is_file():
        return TokenizerSource("hf", Path(init))
    return TokenizerSource("byte")


def run_source(cfg: Any) -> TokenizerSource:
    """The tokenizer source of run config `cfg` (`tokenizer_source` of ``data.tokenizer`` and member 1's init)."""
    return tokenizer_source(cfg.data.tokenizer, cfg.chain[0].init)


@dataclass(frozen=True, eq=False)
class LMTokenizer:
    """A loaded tokenizer (module docstring); `backend` is a `tokenizers.Tokenizer`, `pretrained` the
    `transformers` tokenizer it was read as (a Hugging Face folder), which `save` writes as it is."""

    backend: Any
    kind: str                # "byte" | "bpe" | "hf"
    name: str                # where it came from, for messages
    eos_token: str
    eos_id: int
    vocab_size: int          # ids lie in 0 … vocab_size − 1
    identity: str            # sha256 of the canonical tokenizer.json
    pretrained: Any = field(default=None, repr=False)

    def encode(self, text: str) -> np.ndarray:
        """Token ids (int64) of one document, no special tokens added; byte-level ids *are* the UTF-8 bytes."""
        if self.kind == "byte":
            return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)
        return np.asarray(self.backend.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def decode(self, ids: list[int]) -> str:
        return self.backend.decode(ids, skip_special_tokens=False)

    def record(self) -> dict[str, Any]:
        """What checkpoints and the stored tokenizer record (`check_same`)."""
        return {"kind": self.kind, "name": self.name, "sha256": self.identity, "vocab_size": self.vocab_size,
                "eos_id": self.eos_id}

    def save(self, directory: str | Path) -> Path:
        """The Hugging Face files `AutoTokenizer.from_pretrained(directory)` loads, plus `RECORD_FILE`."""
        from transformers import PreTrainedTokenizerFast

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        hf = self.pretrained or PreTrainedTokenizerFast(tokenizer_object=self.backend, eos_token=self.eos_token)
        hf.save_pretrained(directory)
        (directory / RECORD_FILE).write_text(json.dumps(self.record(), indent=2) + "\n")
        return directory


def identity_of(backend: Any) -> str:
    """sha256 of `backend`'s canonical JSON: sorted keys, without what does not change the ids of a document
    encoded without special tokens and what `transformers` rewrites when it saves a tokenizer (padding,
    truncation, the post-processor that adds special tokens)."""
    raw = json.loads(backend.to_str())
    for key in ("padding", "truncation", "post_processor"):
        raw.pop(key, None)
    return hashlib.sha256(json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def wrap(backend: Any, kind: str, name: str, eos_token: str | None = None, pretrained: Any = None) -> LMTokenizer:
    """An `LMTokenizer` around a `tokenizers.Tokenizer`; the EOS rule of the module docstring."""
    vocab = backend.get_vocab(with_added_tokens=True)
    if eos_token is None:
        eos_token = next((t for t in EOS_CANDIDATES if t in vocab), None)
        if eos_token is None:
            raise UserError(f"tokenizer {name} has no end-of-document token: it names no eos_token and its vocabulary "
                            f"holds none of {', '.join(EOS_CANDIDATES)}; set eos_token in its tokenizer_config.json")
    if eos_token not in vocab:
        raise UserError(f"tokenizer {name}: its eos_token {eos_token!r} is not in its vocabulary")
    return LMTokenizer(backend=backend, kind=kind, name=name, eos_token=eos_token, eos_id=vocab[eos_token],
                       vocab_size=max(vocab.values()) + 1, identity=identity_of(backend), pretrained=pretrained)


# ----------------------------------------------------------------------------------------------- compt's own
def byte_tokenizer() -> Any:
    """Byte-level tokenizer: ids 0…255 are the bytes (in `ByteLevel.alphabet()` order), 256 is ``<eos>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet(), key=lambda ch: _byte_of(ch))
    vocab = {ch: i for i, ch in enumerate(alphabet)} | {EOS: 256}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOS])
    return tok


def _byte_of(ch: str) -> int:
    """Inverse of GPT-2's bytes → printable-unicode table (printable Latin-1 maps to itself)."""
    code = ord(ch)
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    if code in printable:
        return code
    others = [b for b in range(256) if b not in printable]
    return others[code - 256]


def train_bpe(texts: Iterable[str], vocab_size: int, eos: str = EOS) -> Any:
    """Byte-level BPE with at most `vocab_size` tokens (`eos`, its one special token, included), trained on
    `texts`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[eos], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


# ----------------------------------------------------------------------------------------------- loading
def load_tokenizer(source: TokenizerSource, *, vocab_size: int,
                   documents: Callable[[], Iterator[str]] | None = None) -> LMTokenizer:
    """The tokenizer of `source`: built (``byte``), trained on `documents()` up to `vocab_size` (``bpe``) or read
    (``hf``)."""
    if source.kind == "byte":
        return wrap(byte_tokenizer(), "byte", "byte")
    if source.kind == "bpe":
        if documents is None:
            raise ValueError("a bpe tokenizer is trained on the run's documents: pass documents")
        return wrap(train_bpe(documents(), vocab_size), "bpe", "bpe")
    return load_hf(source.path)


def load_hf(path: str | Path) -> LMTokenizer:
    """A Hugging Face tokenizer folder or ``tokenizer.json`` (read once per content: cached by the files' stamps)."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    return _load_hf(str(path.resolve()), tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files))


@lru_cache(maxsize=8)
def _load_hf(path: str, stamp: tuple[Any, ...]) -> LMTokenizer:
    folder = Path(path)
    if folder.is_dir() and not (folder / "tokenizer_config.json").is_file() and (folder / TOKENIZER_FILE).is_file():
        folder = folder / TOKENIZER_FILE   # a bare tokenizer.json in a folder: nothing else to read
    if folder.is_dir():
        from transformers import AutoTokenizer

        try:
            hf = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except Exception as e:  # transformers raises many types (OSError, ValueError, KeyError …) for a bad folder
            raise UserError(f"tokenizer folder {folder} does not load: {_first_line(e)}") from None
        if not getattr(hf, "is_fast", False):
            raise UserError(f"tokenizer folder {folder} has no tokenizer.json (a slow {type(hf).__name__}); save it "
                            f"with a fast tokenizer (tokenizer.save_pretrained on AutoTokenizer's fast tokenizer)")
        return wrap(hf.backend_tokenizer, "hf", str(folder), hf.eos_token, pretrained=hf)
    from tokenizers import Tokenizer

    try:
        backend = Tokenizer.from_file(str(folder))
    except Exception as e:  # the tokenizers library raises its own exception type for unreadable files
        raise UserError(f"tokenizer {folder} does not load: {_first_line(e)}") from None
    return wrap(backend, "hf", str(folder))


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


# ----------------------------------------------------------------------------------------------- stored
def stored_tokenizer(directory: str | Path, kind: str = "byte") -> LMTokenizer | None:
    """The tokenizer stored in `directory` (`LMTokenizer.save`; a run's ``RUN/data``), None when there is none.
    A bare ``tokenizer.json`` (runs of earlier versions) reads as `kind` with ``<eos>``."""
    directory = Path(directory)
    if not (directory / TOKENIZER_FILE).is_file():
        return None
    record = directory / RECORD_FILE
    if not record.is_file():
        from tokenizers import Tokenizer

        return wrap(Tokenizer.from_file(str(directory / TOKENIZER_FILE)), kind, str(directory), EOS)
    rec = json.loads(record.read_text())
    hf = load_hf(directory)
    return LMTokenizer(backend=hf.backend, kind=rec["kind"], name=rec["name"], eos_token=hf.eos_token,
                       eos_id=hf.eos_id, vocab_size=hf.vocab_size, identity=hf.identity, pretrained=hf.pretrained)


def store(tokenizer: LMTokenizer, directory: str | Path) -> None:
    """Save `tokenizer` into `directory` atomically enough for concurrent ranks: written to a temporary folder,
    then moved file by file (each `os.replace` is atomic)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tokenizer.", dir=directory))
    try:
        tokenizer.save(tmp)
        for f in sorted(tmp.iterdir(), key=lambda p: p.name == RECORD_FILE):   # the record last
            os.replace(f, directory / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_same(recorded: dict[str, Any] | None, tokenizer: LMTokenizer, what: str, hint: str = "") -> None:
    """`what` (a checkpoint, a run) recorded tokenizer `recorded` (`LMTokenizer.record`); a one-line `UserError`
    when it is not `tokenizer`. Nothing recorded (files of earlier versions) is accepted."""
    if not recorded or recorded.get("sha256") in (None, tokenizer.identity):
        return
    raise UserError(f"{what} was trained with another tokenizer ({_label(recorded)}, {recorded.get('vocab_size')} "
                    f"token ids, sha256 {str(recorded['sha256'])[:12]}…) than {_label(tokenizer.record())} "
                    f"({tokenizer.vocab_size} token ids, sha256 {tokenizer.identity[:12]}…): its token ids mean "
                    f"other text{hint}")


def _label(record: dict[str, Any]) -> str:
    kind, name = record.get("kind"), record.get("name")
    return f"{kind}" if name in (None, kind) else f"{kind} {name}"


def run_tokenizer(source: TokenizerSource, directory: str | Path, *, vocab_size: int,
                  documents: Callable[[], Iterator[str]]) -> LMTokenizer:
    """A run's tokenizer, stored once in `directory` (``RUN/data``): a ``bpe`` tokenizer is trained once and then
    read back; any other is loaded from `source` and must be the one stored when the run started (a tokenizer
    folder edited since is refused); rank 0 stores it the first time."""
    from compt import distributed

    stored = stored_tokenizer(directory, source.kind)
    if source.kind == "bpe" and stored is not None:
        return stored
    tok = load_tokenizer(source, vocab_size=vocab_size, documents=documents)
    if stored is not None and (Path(directory) / RECORD_FILE).is_file():
        check_same(stored.record(), tok, f"this run ({directory})",
                   "; restore the tokenizer, or train it in a new run directory")
    elif distributed.is_main():   # first use, or a bare tokenizer.json of earlier versions (no identity to check)
        store(tok, directory)
    return tok


def recorded_tokenizer(record: dict[str, Any] | None) -> LMTokenizer | None:
    """The tokenizer a checkpoint's lineage records, where it can be had without its run: the byte-level one, or a
    Hugging Face tokenizer still at its recorded path with the recorded identity; None otherwise."""
    if not record:
        return None
    if record.get("kind") == "byte":
        return load_tokenizer(TokenizerSource("byte"), vocab_size=0)
    path = Path(str(record.get("name", "")))
    if record.get("kind") == "hf" and path.exists():
        tok = load_hf(path)
        return tok if tok.identity == record.get("sha256") else None
    return None


def init_record(init: str | Path) -> dict[str, Any] | None:
    """The tokenizer member 1's `init` was trained with: a Hugging Face folder's own tokenizer, a compt checkpoint's
    lineage record; None when it names none (a folder without tokenizer.json, a checkpoint of earlier versions)."""
    init = Path(init)
    if init.is_dir():
        return load_hf(init).record() if (init / TOKENIZER_FILE).is_file() else None
    from compt.checkpoint import load_checkpoint

    return load_checkpoint(init, mmap=True).lineage.get("tokenizer")


def check_fits(tokenizer: LMTokenizer, vocab: dict[str, int]) -> None:
    """Every model's vocabulary (name → vocab_size) holds the tokenizer's ids (≥ the tokenizer's `vocab_size`;
    larger is padding). A run resizes its members' vocabularies before this holds
    (`compt.lm.paradigm.LMParadigm.run_configs`); what cannot be resized (a given child config) is refused."""
    small = {name: v for name, v in vocab.items() if v < tokenizer.vocab_size}
    if small:
        raise UserError(f"tokenizer {tokenizer.name} has {tokenizer.vocab_size:,} token ids but "
                        f"{', '.join(f'{n} has vocab_size {v:,}' for n, v in small.items())}: a model's "
                        f"vocabulary must hold the tokenizer's; choose a model with vocab_size ≥ "
                        f"{tokenizer.vocab_size:,} or a smaller tokenizer")


def check_ids(ids: np.ndarray, vocab_size: int, file: str | Path) -> None:
    """Token ids of `file` must lie below the model's `vocab_size` (one-line `UserError` naming the largest)."""
    if ids.size and int(ids.max()) >= vocab_size:
        raise UserError(f"{file}: token id {int(ids.max()):,} ≥ the model's vocabulary of {vocab_size:,}")
