"""Document corpora (``[data] kind = "documents"``): JSONL, Parquet or a `datasets` folder, tokenised per file.

``data.path`` is a ``.jsonl`` / ``.parquet`` file, a folder (its ``.jsonl`` and ``.parquet`` files below it,
sorted), a glob, or a folder written by ``datasets.Dataset.save_to_disk`` (it holds ``state.json``; read offline
with ``datasets.load_from_disk``, one input shard per Arrow file). Each document is the string in its
``data.text_field`` (default ``text``) field or column.

Every input shard is tokenised on its own with the run's tokenizer (`compt.lm.tokenizers`), each document followed
by the tokenizer's end-of-document id, into a flat token file (`compt.lm.shards`) plus the offsets where its documents
end. The cache lies in ``.compt-tokens/`` in the data folder, or in ``RUN/data/tokens-cache/`` when the data folder
cannot be written; its names hold a hash of (tokenizer, file path, size, modification time, text field), so a
changed file or tokenizer is tokenised again and an unchanged one is read back. With several ranks each tokenises
its share of the files, then all read them.

Held-out and validation documents are chosen by a hash of their key (file, document index): the documents of
lowest rank (`compt.lm.shards.ranks`) until they give the split's windows; training reads the rest.

`open_corpus` opens either kind of corpus besides text files — documents, or token shards (`compt.lm.shards`) —
for a run (`compt.lm.data.LMData`), with the run's tokenizer (`compt.lm.data.open_tokenizer`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compt import distributed
from compt.errors import UserError
from compt.lm.shards import (
    Segment,
    SegmentWindows,
    Shard,
    cut_out,
    dtype_for,
    open_shards,
    ranks,
    shard_files,
    whole,
    window_split,
)
from compt.lm.tokenizers import LMTokenizer

DOC_SUFFIXES = (".jsonl", ".parquet")
CACHE_DIR = ".compt-tokens"
TEXT_FIELD = "text"                 # data.text_field unset
EXTRA = "pip install 'compt[lm]'"   # the optional dependencies (datasets, pyarrow) of document corpora


# ----------------------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class DocFile:
    """One input shard of documents: a JSONL, Parquet or Arrow (`datasets` folder) file; `name` is its key."""

    path: Path
    name: str
    fmt: str


def _need(module: str) -> None:
    raise UserError(f"document corpora need the {module} package: {EXTRA}")


def is_datasets_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file())


def document_files(path: str | Path) -> tuple[Path, list[DocFile]]:
    """(root, input shards) of ``data.path`` (module docstring); a `UserError` for other files."""
    p = Path(path).expanduser()
    if is_datasets_folder(p):
        return p, [DocFile(Path(f), str(Path(f).relative_to(p)), "arrow") for f in _arrow_files(p)]
    root, files = shard_files(p, DOC_SUFFIXES)
    for f in files:
        if not f.name.endswith(DOC_SUFFIXES):
            raise UserError(f"document file {f} is not .jsonl or .parquet (data.kind = \"documents\")")
    return root, [DocFile(f, str(f.relative_to(root)) if f.is_relative_to(root) else str(f),
                          "jsonl" if f.name.endswith(".jsonl") else "parquet") for f in files]


def _arrow_files(folder: Path) -> list[str]:
    """The Arrow files of a ``save_to_disk`` folder, loaded once offline to check that it loads."""
    try:
        import datasets
    except ImportError:
        _need("datasets")
    try:
        ds = datasets.load_from_disk(str(folder))
    except Exception as e:  # datasets raises several types (FileNotFoundError, ArrowInvalid, JSONDecodeError …)
        raise UserError(f"datasets folder {folder} does not load: {str(e).splitlines()[0][:200]}") from None
    if isinstance(ds, datasets.DatasetDict):
        raise UserError(f"datasets folder {folder} holds the splits {', '.join(ds)}: set data.path to one of them "
                        f"({folder / next(iter(ds))})")
    files = [c["filename"] for c in ds.cache_files]
    if not files:
        raise UserError(f"datasets folder {folder} holds no Arrow files")
    return files


def read_texts(doc: DocFile, field: str) -> Iterator[str]:
    """The `field` string of every document of `doc`, in order; a missing field or a non-string is a `UserError`
    naming the file (and line)."""
    if doc.fmt == "jsonl":
        yield from _jsonl_texts(doc.path, field)
        return
    if doc.fmt == "parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            _need("pyarrow")
        table = pq.ParquetFile(doc.path)
        names, batches = table.schema_arrow.names, None
        if field in names:
            batches = (b.column(0).to_pylist() for b in table.iter_batches(columns=[field], batch_size=1024))
    else:
        from datasets import Dataset

        ds = Dataset.from_file(str(doc.path))
        names = ds.column_names
        if field in names:
            batches = (b[field] for b in ds.iter(batch_size=1024))
    if batches is None:
        raise UserError(f"{doc.path} has no text field {field!r} (data.text_field; its columns: {', '.join(names)})")
    for batch in batches:
        for text in batch:
            if not isinstance(text, str):
                raise UserError(f"{doc.path}: text field {field!r} holds {type(text).__name__}, not a string")
            yield text


def _jsonl_texts(path: Path, field: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise UserError(f"{path}:{line_no} is not JSON ({e})") from None
            if not isinstance(obj, dict) or field not in obj:
                keys = ", ".join(obj) if isinstance(obj, dict) else type(obj).__name__
                raise UserError(f"{path}:{line_no} has no text field {field!r} (data.text_field; it has: {keys})")
            if not isinstance(obj[field], str):
                raise UserError(f"{path}:{line_no}: text field {field!r} is {type(obj[field]).__name__}, not a string")
            yield obj[field]


# ----------------------------------------------------------------------------------------------- token cache
@dataclass(frozen=True)
class DocShard:
    """An input shard tokenised: its tokens (a `Shard`) and the token offset after each document's EOS."""

    shard: Shard
    ends: np.ndarray     # (documents,) int64, increasing, ends[-1] = shard.tokens


def cache_folder(root: Path, fallback: Path) -> Path:
    """``root/.compt-tokens`` when it can be written, else `fallback` (the run's ``data/tokens-cache``)."""
    for folder in (root / CACHE_DIR, fallback):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
            return folder
        except OSError:
            continue
    raise UserError(f"cannot write a token cache in {root / CACHE_DIR} nor in {fallback}")


def tokenized(doc: DocFile, field: str, tok: LMTokenizer, folder: Path) -> DocShard:
    """`doc`'s tokens from the cache in `folder`, tokenised first when the cache has no entry for its key."""
    st = doc.path.stat()
    key = hashlib.sha256(json.dumps([tok.identity, str(doc.path.resolve()), st.st_size, st.st_mtime_ns,
                                     field]).encode()).hexdigest()[:16]
    stem = folder / f"{doc.name.replace(os.sep, '__')}.{key}"
    meta = stem.with_name(stem.name + ".json")
    if not meta.is_file():
        _tokenize(doc, field, tok, stem)
    info = json.loads(meta.read_text())
    shard = Shard(path=str(stem.with_name(stem.name + ".bin")), name=doc.name, dtype=info["dtype"],
                  tokens=info["tokens"])
    return DocShard(shard=shard, ends=np.load(stem.with_name(stem.name + ".ends.npy")))


def _tokenize(doc: DocFile, field: str, tok: LMTokenizer, stem: Path) -> None:
    """Write ``stem.bin`` (ids, each document then EOS), ``stem.ends.npy`` and, last, ``stem.json``."""
    dtype, ends, total = dtype_for(tok.vocab_size), [], 0
    tmp = stem.with_name(f"{stem.name}.bin.{os.getpid()}")
    with open(tmp, "wb") as out:
        for text in read_texts(doc, field):
            ids = np.append(tok.encode(text), tok.eos_id).astype(dtype)
            ids.tofile(out)
            total += ids.size
            ends.append(total)
    if not ends:
        tmp.unlink()
        raise UserError(f"document file {doc.path} holds no documents")
    os.replace(tmp, stem.with_name(stem.name + ".bin"))
    tmp_ends = stem.with_name(f"{stem.name}.ends.{os.getpid()}")
    with open(tmp_ends, "wb") as out:
        np.save(out, np.asarray(ends, dtype=np.int64))
    os.replace(tmp_ends, stem.with_name(stem.name + ".ends.npy"))
    info = {"source": str(doc.path), "dtype": dtype, "tokens": total, "documents": len(ends)}
    tmp_meta = stem.with_name(f"{stem.name}.json.{os.getpid()}")
    tmp_meta.write_text(json.dumps(info))
    os.replace(tmp_meta, stem.with_name(stem.name + ".json"))


def tokenized_corpus(path: str | Path, field: str, tok: LMTokenizer, fallback: Path) -> list[DocShard]:
    """Every input shard of ``data.path`` tokenised (cached): rank r tokenises the files i ≡ r (mod ranks) that
    are not cached yet, then every rank reads all of them (tokenising itself any it cannot see: a data folder
    that is not shared by all nodes). Says where the cache lies."""
    root, docs = document_files(path)
    folder = cache_folder(root, fallback)
    rank, world, _ = distributed.world_info_from_env()
    try:
        for doc in docs[rank::world]:
            tokenized(doc, field, tok, folder)
    except Exception:   # the other ranks wait for this rank's answer
        distributed.all_true(False)
        raise
    if not distributed.all_true(True):
        raise UserError("another rank could not tokenise its share of the documents (its message says why)")
    out = [tokenized(d, field, tok, folder) for d in docs]
    distributed.say(f"{len(docs)} document file(s) of {path} tokenised ({sum(s.shard.tokens for s in out):,} "
                    f"tokens, {sum(s.ends.size for s in out):,} documents), cached in {folder}")
    return out


def document_split(shards: Sequence[DocShard], context: int, counts: Sequence[int], seed: int
                   ) -> tuple[list[Segment], list[np.ndarray]]:
    """(training segments, [split ids, …]): split j is the documents of lowest rank (after those of the splits
    before it) until they hold `counts[j]` windows, packed in corpus order into one array; training is every
    shard less the token ranges of those documents."""
    if not counts:
        return whole([s.shard for s in shards]), []
    rank = np.concatenate([ranks(s.shard.name, seed, np.arange(s.ends.size)) for s in shards])
    src = np.concatenate([np.full(s.ends.size, i, dtype=np.int64) for i, s in enumerate(shards)])
    idx = np.concatenate([np.arange(s.ends.size, dtype=np.int64) for s in shards])
    order, at, splits, holes = np.argsort(rank, kind="stable"), 0, [], []
    for c in counts:
        chosen, tokens = [], 0
        while tokens < c * context + 1 and at < order.size:
            s, d = int(src[order[at]]), int(idx[order[at]])
            a, b = (int(shards[s].ends[d - 1]) if d else 0), int(shards[s].ends[d])
            chosen.append((s, a, b))
            tokens, at = tokens + b - a, at + 1
        if tokens < c * context + 1 or at == order.size:
            raise UserError(f"the documents give too few tokens for a training split and {' + '.join(map(str, counts))}"
                            f" held-out windows of {context} + 1 tokens")
        chosen.sort()
        splits.append(np.concatenate([shards[s].shard.open()[a:b] for s, a, b in chosen]))
        holes += chosen
    return cut_out(whole([s.shard for s in shards]), holes), splits


# ----------------------------------------------------------------------------------------------- run data
KINDS = ("tokens", "documents")   # the data kinds of `open_corpus` (besides compt.lm.text's "text")


@dataclass(frozen=True)
class Corpus:
    """A token or document corpus opened for a run: its tokenizer, what `validation_from` needs to read
    ``data.val_path`` the same way, and the carved validation windows (None: not carved)."""

    tokenizer: LMTokenizer
    kind: str
    context: int
    model_vocab: int
    text_field: str
    run_data: Path
    carved: SegmentWindows | None


def _sources(kind: str, path: str, field: str, tok: LMTokenizer, model_vocab: int, run_data: Path
             ) -> tuple[list[Shard], list[DocShard] | None]:
    """(token shards, their documents when `kind` is documents) of a corpus path."""
    if not path:
        raise UserError(f"data.kind = \"{kind}\" needs data.path (a folder, file or glob of its files)")
    if kind == "tokens":
        return open_shards(path, model_vocab=model_vocab, tokenizer_vocab=tok.vocab_size, eos_id=tok.eos_id), None
    docs = tokenized_corpus(path, field, tok, run_data / "tokens-cache")
    return [d.shard for d in docs], docs


def open_corpus(data: Any, model: Any, run_data: Path, tok: LMTokenizer, carve: int | None
                ) -> tuple[SegmentWindows, SegmentWindows, Corpus]:
    """(train windows, held-out windows, corpus) of a tokens or documents run (`data`: its `DataConfig`, `model`:
    the first member's `LMConfig`, `run_data`: ``RUN/data``, `tok`: the run's tokenizer): the held-out split
    (``data.eval_samples`` windows) and, when `carve` is a number, a validation split of that many windows, taken
    by a hash of each window's or document's key with seed ``data.seed``; training reads the first
    ``data.num_samples`` windows of the rest."""
    ctx = model.context_length
    if tok.vocab_size > model.vocab_size:
        raise UserError(f"the tokenizer has {tok.vocab_size:,} tokens; the model has {model.vocab_size:,}")
    counts, field = [data.eval_samples] + ([carve] if carve is not None else []), data.text_field or TEXT_FIELD
    shards, docs = _sources(data.kind, data.path, field, tok, model.vocab_size, run_data)
    if docs is None:
        train_segments, picked = window_split(shards, ctx, counts, data.seed)
        splits = [SegmentWindows(shards, segs, ctx) for segs in picked]
    else:
        train_segments, arrays = document_split(docs, ctx, counts, data.seed)
        splits = [SegmentWindows([a], [(0, 0, a.size)], ctx, limit=c) for a, c in zip(arrays, counts)]
    train = SegmentWindows(shards, train_segments, ctx, limit=data.num_samples)
    unit = "windows" if docs is None else "documents"
    distributed.say(f"{data.kind} corpus {data.path}: {train.available:,} training windows of {ctx} + 1 tokens "
                    f"(training on {len(train):,}: data.num_samples), {len(splits[0])} held-out windows"
                    f"{f', {len(splits[1])} validation windows' if len(splits) > 1 else ''} taken by a hash of "
                    f"their {unit}")
    return train, splits[0], Corpus(tokenizer=tok, kind=data.kind, context=ctx, model_vocab=model.vocab_size,
                                    text_field=field, run_data=run_data,
                                    carved=splits[1] if len(splits) > 1 else None)


def validation_from(corpus: Corpus, path: str, windows: int) -> SegmentWindows:
    """The first `windows` windows of `path` (``data.val_path``) read as the corpus is (kind, tokenizer)."""
    shards, _ = _sources(corpus.kind, path, corpus.text_field, corpus.tokenizer, corpus.model_vocab,
                         corpus.run_data)
    return SegmentWindows(shards, whole(shards), corpus.context, limit=windows)


def corpus_fingerprint(kind: str, path: str) -> dict[str, Any]:
    """The corpus files by name and size (a token folder's ``tokens.json`` also by content): no file is read."""
    from compt.datafp import files_fingerprint
    from compt.lm.shards import SIDECAR

    if kind == "tokens":
        root, files = shard_files(path)
        side = files[0].parent / SIDECAR
        return files_fingerprint(files + ([side] if side.is_file() else []), root, hashed=(SIDECAR,))
    root, docs = document_files(path)
    return files_fingerprint([d.path for d in docs], root)
