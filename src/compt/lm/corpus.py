"""Document corpora (``[data] kind = "documents"``): JSONL, Parquet or a `datasets` folder, tokenised per file.

``data.path`` is a ``.jsonl`` / ``.parquet`` file, a folder (its ``.jsonl`` and ``.parquet`` files below it,
sorted), a glob, or a folder written by ``datasets.Dataset.save_to_disk`` (it holds ``state.json``; read offline
with ``datasets.load_from_disk``, one input shard per Arrow file). Each document is the string in its
``data.text_field`` (default ``text``) field or column.

Every input shard is tokenised on its own with the run's tokenizer (`compt.lm.tokenizers`), each document followed
by the tokenizer's end-of-document id, into a flat token file (`compt.lm.shards`) plus the offsets where its documents
end. The cache lies in ``.compt-tokens/`` in the data folder, or in ``RUN/data/tokens-cache/`` when the data folder
cannot be written; its names hold a hash of (tokenizer, file path, size, modification time, text field), so a
changed file or tokenizer is tokenised again and an unchanged one is read back. Files are tokenised lazily, in
order, only as far as the run needs them (`DocReader`): the held-out and validation pools, then ``data.num_samples``
training windows; a run that needs a corpus's first files never reads the others. With several ranks each tokenises
its share of each round of files, then all read them.

Held-out and validation documents are chosen by a hash of their key (file, document index): the documents of
lowest rank (`compt.lm.shards.ranks`) until they give the split's windows, drawn from a pool of the first files
that hold `SPLIT_POOL` times the split's tokens (`document_split`); training reads the rest.

`open_corpus` opens either kind of corpus besides text files — documents, or token shards (`compt.lm.shards`) —
for a run (`compt.lm.data.LMData`), with the run's tokenizer (`compt.lm.data.open_tokenizer`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Callable, Iterator, Sequence
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
SPLIT_POOL = 8                      # a split draws its documents from the first files holding 8x its tokens
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


class DocReader:
    """The input shards of ``data.path`` tokenised (cached) on demand, in file order: `until` tokenises only as many
    files as a predicate needs, so a corpus larger than the run needs is never read whole. With several ranks,
    rank r tokenises file i + r of each round of `world` files, then every rank reads them (tokenising itself any
    it cannot see: a data folder that is not shared by all nodes); the prefix kept is the shortest that meets the
    predicate, whatever the number of ranks."""

    def __init__(self, path: str | Path, field: str, tok: LMTokenizer, fallback: Path) -> None:
        self.path, self.field, self.tok = path, field, tok
        root, self.files = document_files(path)
        self.folder = cache_folder(root, fallback)
        self.shards: list[DocShard] = []

    def until(self, enough: Callable[[list[DocShard]], bool]) -> list[DocShard]:
        """The shortest prefix of the files, tokenised, that meets `enough` (all of them when none does)."""
        rank, world, _ = distributed.world_info_from_env()
        while not enough(self.shards) and len(self.shards) < len(self.files):
            batch = self.files[len(self.shards):len(self.shards) + world]
            try:
                if rank < len(batch):
                    tokenized(batch[rank], self.field, self.tok, self.folder)
            except Exception:   # the other ranks wait for this rank's answer
                distributed.all_true(False)
                raise
            if not distributed.all_true(True):
                raise UserError("another rank could not tokenise its share of the documents (its message says why)")
            for doc in batch:
                self.shards.append(tokenized(doc, self.field, self.tok, self.folder))
                if enough(self.shards):
                    break
        return self.shards

    def said(self) -> str:
        """Which files were tokenised, and where the cache lies."""
        n, total = len(self.shards), len(self.files)
        rest = f"; the other {total - n} are not read (the run's windows fit in these)" if n < total else ""
        return (f"{n} of {total} document file(s) of {self.path} tokenised "
                f"({sum(s.shard.tokens for s in self.shards):,} tokens, {sum(s.ends.size for s in self.shards):,} "
                f"documents), cached in {self.folder}{rest}")


def tokenized_corpus(path: str | Path, field: str, tok: LMTokenizer, fallback: Path) -> list[DocShard]:
    """Every input shard of ``data.path`` tokenised (cached; `DocReader`)."""
    reader = DocReader(path, field, tok, fallback)
    return reader.until(lambda _: False)


def split_tokens(context: int, counts: Sequence[int]) -> list[int]:
    """The tokens splits 0 … j need together, for each j: ``Σ (counts[i] · context + 1)``."""
    return list(itertools.accumulate(c * context + 1 for c in counts))


def pool_size(shards: Sequence[DocShard], tokens: int) -> int:
    """How many of the first `shards` a split of `tokens` tokens draws from: the fewest that hold ``SPLIT_POOL ×
    tokens`` (all of them when fewer do)."""
    held = np.cumsum([s.shard.tokens for s in shards])
    return min(len(shards), int(np.searchsorted(held, SPLIT_POOL * tokens)) + 1)


def document_split(shards: Sequence[DocShard], context: int, counts: Sequence[int], seed: int
                   ) -> tuple[list[Segment], list[np.ndarray]]:
    """(training segments, [split ids, …]): split j is the documents of lowest rank in its pool (`pool_size` for
    the tokens of splits 0 … j), less those of the splits before it, until they hold `counts[j]` windows, packed in
    corpus order into one array; training is every shard less the token ranges of those documents. Split 0's pool
    depends on `counts[0]` alone, so the held-out split does not change with the validation split or
    ``data.num_samples``."""
    if not counts:
        return whole([s.shard for s in shards]), []
    chosen_docs: set[tuple[int, int]] = set()
    splits, holes = [], []
    for c, need in zip(counts, split_tokens(context, counts)):
        pool = shards[:pool_size(shards, need)]
        rank = np.concatenate([ranks(s.shard.name, seed, np.arange(s.ends.size)) for s in pool])
        src = np.concatenate([np.full(s.ends.size, i, dtype=np.int64) for i, s in enumerate(pool)])
        idx = np.concatenate([np.arange(s.ends.size, dtype=np.int64) for s in pool])
        chosen, tokens, left = [], 0, 0
        for at in np.argsort(rank, kind="stable"):
            s, d = int(src[at]), int(idx[at])
            if (s, d) in chosen_docs:
                continue
            if tokens >= c * context + 1:
                left += 1
                break
            a, b = (int(shards[s].ends[d - 1]) if d else 0), int(shards[s].ends[d])
            chosen.append((s, a, b))
            chosen_docs.add((s, d))
            tokens += b - a
        if tokens < c * context + 1 or (not left and len(pool) == len(shards)):
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


def _windows(shards: Sequence[DocShard], context: int) -> int:
    """The windows of ``context + 1`` tokens in whole shards."""
    return sum(max(0, (s.shard.tokens - 1) // context) for s in shards)


def _need_path(kind: str, path: str) -> None:
    if not path:
        raise UserError(f"data.kind = \"{kind}\" needs data.path (a folder, file or glob of its files)")


def open_corpus(data: Any, model: Any, run_data: Path, tok: LMTokenizer, carve: int | None
                ) -> tuple[SegmentWindows, SegmentWindows, Corpus]:
    """(train windows, held-out windows, corpus) of a tokens or documents run (`data`: its `DataConfig`, `model`:
    the first member's `LMConfig`, `run_data`: ``RUN/data``, `tok`: the run's tokenizer): the held-out split
    (``data.eval_samples`` windows) and, when `carve` is a number, a validation split of that many windows, taken
    by a hash of each window's or document's key with seed ``data.seed``; training reads the first
    ``data.num_samples`` windows of the rest. Documents are tokenised only as far as the splits' pools
    (`document_split`) and ``data.num_samples`` training windows need (`DocReader`)."""
    ctx = model.context_length
    if tok.vocab_size > model.vocab_size:
        raise UserError(f"the tokenizer has {tok.vocab_size:,} tokens; the model has {model.vocab_size:,}")
    counts, field = [data.eval_samples] + ([carve] if carve is not None else []), data.text_field or TEXT_FIELD
    _need_path(data.kind, data.path)
    if data.kind == "tokens":
        shards = open_shards(data.path, model_vocab=model.vocab_size, tokenizer_vocab=tok.vocab_size,
                             eos_id=tok.eos_id)
        train_segments, picked = window_split(shards, ctx, counts, data.seed)
        splits = [SegmentWindows(shards, segs, ctx) for segs in picked]
    else:
        reader = DocReader(data.path, field, tok, run_data / "tokens-cache")
        split_total = split_tokens(ctx, counts)[-1]
        pool = pool_size(reader.until(lambda got: sum(d.shard.tokens for d in got) >= SPLIT_POOL * split_total),
                         split_total)
        train_segments, arrays = document_split(reader.shards[:pool], ctx, counts, data.seed)
        have = SegmentWindows([d.shard for d in reader.shards[:pool]], train_segments, ctx).available
        docs = reader.until(lambda got: have + _windows(got[pool:], ctx) >= data.num_samples)
        train_segments += [(i, 0, d.shard.tokens) for i, d in enumerate(docs) if i >= pool]
        shards = [d.shard for d in docs]
        splits = [SegmentWindows([a], [(0, 0, a.size)], ctx, limit=c) for a, c in zip(arrays, counts)]
        distributed.say(reader.said())
    train = SegmentWindows(shards, train_segments, ctx, limit=data.num_samples)
    unit = "windows" if data.kind == "tokens" else "documents"
    distributed.say(f"{data.kind} corpus {data.path}: {train.available:,} training windows of {ctx} + 1 tokens "
                    f"(training on {len(train):,}: data.num_samples), {len(splits[0])} held-out windows"
                    f"{f', {len(splits[1])} validation windows' if len(splits) > 1 else ''} taken by a hash of "
                    f"their {unit}")
    return train, splits[0], Corpus(tokenizer=tok, kind=data.kind, context=ctx, model_vocab=model.vocab_size,
                                    text_field=field, run_data=run_data,
                                    carved=splits[1] if len(splits) > 1 else None)


def validation_from(corpus: Corpus, path: str, windows: int) -> SegmentWindows:
    """The first `windows` windows of `path` (``data.val_path``) read as the corpus is (kind, tokenizer); of a
    document corpus, only the files that hold them are tokenised."""
    _need_path(corpus.kind, path)
    if corpus.kind == "tokens":
        shards = open_shards(path, model_vocab=corpus.model_vocab, tokenizer_vocab=corpus.tokenizer.vocab_size,
                             eos_id=corpus.tokenizer.eos_id)
    else:
        reader = DocReader(path, corpus.text_field, corpus.tokenizer, corpus.run_data / "tokens-cache")
        shards = [d.shard for d in reader.until(lambda got: _windows(got, corpus.context) >= windows)]
        distributed.say(reader.said())
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
