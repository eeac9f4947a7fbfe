"""Flat token shards (``[data] kind = "tokens"``), read through numpy memory maps, and the windows cut from them.

A token shard is a headerless array of token ids, as nanoGPT's ``prepare.py`` writes ``train.bin``
(``np.uint16``): uint16 for vocabularies of at most 65,536 tokens, uint32 above. ``data.path`` is one such file, a
folder (its ``*.bin`` files, sorted) or a glob (``"data/train-*.bin"``). The dtype comes from a sidecar
``tokens.json`` in the shards' folder (`SIDECAR`; every key optional)::

    {"dtype": "uint16", "vocab_size": 50257, "eos_id": 50256}

else from the run tokenizer's vocabulary size. Opening a shard reads its size only (``os.stat``) and
`SAMPLE_TOKENS` ids at its start, middle and end: the ids checked against the model's vocabulary (`open_shards`).

Windows (`SegmentWindows`) are ``context + 1`` tokens at stride ``context`` inside a *segment* (a token range of
one shard; a shard's last < ``context + 1`` tokens are dropped), so each token is a target of at most one window.
Splits are taken by a hash of a key (`ranks`): for shards the key is (shard, window index) and the held-out and
validation windows are those of lowest rank, cut out of the training segments (`cut_out`).
"""

from __future__ import annotations

import bisect
import glob
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from compt.errors import UserError

SIDECAR = "tokens.json"
SAMPLE_TOKENS = 1 << 16        # ids read at a shard's start, middle and end for the vocabulary check
DTYPES = ("uint16", "uint32")
RANK_CHUNK = 1 << 22           # window keys ranked per numpy call (bounds the memory of `lowest_keys`)


def dtype_for(vocab_size: int) -> str:
    """uint16 when every id of a `vocab_size`-token vocabulary fits (≤ 65,536 tokens), else uint32."""
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


def shard_files(path: str | Path, suffixes: tuple[str, ...] = (".bin",)) -> tuple[Path, list[Path]]:
    """(root, files) of ``data.path``: a file, a folder (its files ending in `suffixes`, below it, sorted) or a glob
    (sorted); root is the folder names are taken relative to. A `UserError` when nothing matches."""
    p = Path(path).expanduser()
    if p.is_file():
        return p.parent, [p]
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(suffixes) and
                       ".compt-tokens" not in f.parts)
        if not files:
            raise UserError(f"data folder {p} holds no {' / '.join(suffixes)} files")
        return p, files
    files = sorted(Path(f) for f in glob.glob(str(p), recursive=True) if Path(f).is_file())
    if not files:
        raise UserError(f"data.path {path} matches no file")
    root = next(q for q in p.parents if not glob.has_magic(str(q)))
    return root, files


@dataclass(frozen=True)
class Sidecar:
    """The ``tokens.json`` of a shard folder (`SIDECAR`); None: not stated."""

    dtype: str | None = None
    vocab_size: int | None = None
    eos_id: int | None = None
    path: Path | None = None


def read_sidecar(folder: Path) -> Sidecar:
    """``folder/tokens.json`` checked (dtype one of `DTYPES`, integers, a dtype that holds the vocabulary), or an
    empty `Sidecar` when there is none."""
    path = folder / SIDECAR
    if not path.is_file():
        return Sidecar()
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is not readable JSON: {e}") from None
    dtype, vocab, eos = raw.get("dtype"), raw.get("vocab_size"), raw.get("eos_id")
    if dtype is not None and dtype not in DTYPES:
        raise UserError(f"{path}: dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    for key, v in (("vocab_size", vocab), ("eos_id", eos)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise UserError(f"{path}: {key} must be a non-negative integer, got {v!r}")
    if dtype is not None and vocab is not None and np.iinfo(dtype).max + 1 < vocab:
        raise UserError(f"{path}: dtype {dtype} cannot hold ids of a {vocab:,}-token vocabulary (use uint32)")
    return Sidecar(dtype=dtype, vocab_size=vocab, eos_id=eos, path=path)


@dataclass(frozen=True)
class Shard:
    """One memory-mappable token file: `tokens` ids of `dtype`; `name` is its path below the data root (its key)."""

    path: str
    name: str
    dtype: str
    tokens: int

    def open(self) -> np.ndarray:
        """The ids, memory-mapped read-only (a plain ndarray view: no memmap subclass on every slice)."""
        return np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.tokens,)).view(np.ndarray)


def open_shards(path: str | Path, *, model_vocab: int, tokenizer_vocab: int, eos_id: int) -> list[Shard]:
    """The shards of ``data.path`` with their dtype (sidecar, else `dtype_for(tokenizer_vocab)`), each checked
    without reading it: non-empty, a whole number of ids, its sampled ids below `model_vocab`; the sidecar's
    vocabulary fits the model and the tokenizer, and its EOS is the tokenizer's. Every problem is a `UserError`
    naming the file."""
    root, files = shard_files(path)
    side = read_sidecar(files[0].parent)
    where = side.path or files[0].parent
    if side.vocab_size is not None and side.vocab_size > model_vocab:
        raise UserError(f"{where}: vocab_size {side.vocab_size:,} is larger than the model's vocabulary "
                        f"({model_vocab:,}): token ids would index past the embedding")
    if side.vocab_size is not None and side.vocab_size > tokenizer_vocab:
        raise UserError(f"{where}: vocab_size {side.vocab_size:,} is larger than the run tokenizer's "
                        f"({tokenizer_vocab:,}): the shards were made with another tokenizer (set "
                        f"data.tokenizer to it)")
    if side.eos_id is not None and side.eos_id != eos_id:
        raise UserError(f"{where}: eos_id {side.eos_id} is not the run tokenizer's end-of-document id {eos_id}: "
                        f"the shards were made with another tokenizer (set data.tokenizer to it)")
    dtype = side.dtype or dtype_for(tokenizer_vocab)
    item = np.dtype(dtype).itemsize
    shards = []
    for f in files:
        size = f.stat().st_size
        if size == 0:
            raise UserError(f"token shard {f} is empty")
        if size % item:
            raise UserError(f"token shard {f} has {size:,} bytes, not a whole number of {dtype} ids ({item} bytes "
                            f"each): its dtype is not {dtype} (state it in {f.parent / SIDECAR})")
        shard = Shard(path=str(f), name=str(f.relative_to(root)) if f.is_relative_to(root) else str(f),
                      dtype=dtype, tokens=size // item)
        check_ids(shard, model_vocab)
        shards.append(shard)
    return shards


def check_ids(shard: Shard, model_vocab: int) -> None:
    """The largest of `SAMPLE_TOKENS` ids at the shard's start, middle and end is below `model_vocab`."""
    ids, n = shard.open(), shard.tokens
    top = max(int(ids[a:a + SAMPLE_TOKENS].max()) for a in {0, max(0, n // 2 - SAMPLE_TOKENS // 2),
                                                           max(0, n - SAMPLE_TOKENS)})
    if top >= model_vocab:
        raise UserError(f"token shard {shard.path} holds id {top:,}, not below the model's vocabulary "
                        f"({model_vocab:,}): made with another tokenizer, or its dtype is not {shard.dtype}")


# ----------------------------------------------------------------------------------------------- hash ranks
def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 that spreads every input bit over the output."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def ranks(name: str, seed: int, index: np.ndarray) -> np.ndarray:
    """rank(name, i) = mix(salt + i) for the keys (name, i) of `index`, salt = the first 8 bytes of
    sha256("<seed>/<name>"): a fixed pseudo-random order of every (shard or file, window or document) key."""
    salt = np.uint64(int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:8], "big"))
    with np.errstate(over="ignore"):
        return _mix(index.astype(np.uint64) + salt)


def lowest_keys(counts: Sequence[tuple[str, int]], k: int, seed: int) -> list[tuple[int, int]]:
    """The `k` keys (source position, index) of lowest rank among ``range(count)`` of each (name, count) source,
    in rank order; computed `RANK_CHUNK` indices at a time (memory bounded by k + RANK_CHUNK)."""
    best = np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    for pos, (name, count) in enumerate(counts):
        for lo in range(0, count, RANK_CHUNK):
            idx = np.arange(lo, min(count, lo + RANK_CHUNK), dtype=np.int64)
            r = np.concatenate([best[0], ranks(name, seed, idx)])
            src = np.concatenate([best[1], np.full(idx.size, pos, dtype=np.int64)])
            ix = np.concatenate([best[2], idx])
            keep = np.argpartition(r, k - 1)[:k] if r.size > k else np.arange(r.size)
            best = r[keep], src[keep], ix[keep]
    order = np.argsort(best[0], kind="stable")
    return [(int(best[1][i]), int(best[2][i])) for i in order]


# ----------------------------------------------------------------------------------------------- windows
Segment = tuple[int, int, int]   # (source, first token, end token)


class SegmentWindows(Dataset):
    """Windows of ``context + 1`` tokens at stride ``context`` inside each segment, segment after segment, at
    most `limit`; item = (ids (context + 1,) int64, index). A source is a `Shard` (memory-mapped on first use in
    each process, so loader workers never pickle its tokens) or an in-memory array."""

    deterministic = True
    reads_batches = True   # `compt.train.loader.train_loader` hands it whole index lists

    def __init__(self, sources: Sequence[Shard | np.ndarray], segments: Sequence[Segment], context: int,
                 limit: int | None = None) -> None:
        self.sources, self.context = list(sources), context
        self._src, self._start, self._base = [], [], []
        total = 0
        for s, a, b in segments:
            n = max(0, (b - a - 1) // context)
            if n:
                self._src.append(s)
                self._start.append(a)
                self._base.append(total)
                total += n
        self.available = total
        self.n = total if limit is None else min(total, limit)
        self._table = np.array([self._base, self._start, self._src], dtype=np.int64).reshape(3, -1)
        self._arrays: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return self.n

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}

    def _batch(self, i: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The windows of `i`, located in one vectorised step; the per-window Python work is the loader's cost
        (benchmarks/bench_tokens.py)."""
        index = np.asarray(i, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= self.n):
            raise IndexError(f"window indices outside [0, {self.n})")
        base, start, src = self._table
        seg = np.searchsorted(base, index, side="right") - 1
        firsts, sources = (start[seg] + (index - base[seg]) * self.context).tolist(), src[seg].tolist()
        out, width, arrays = np.empty((len(i), self.context + 1), dtype=np.int64), self.context + 1, self._arrays
        for row, (s, a) in enumerate(zip(sources, firsts)):
            out[row] = arrays[s][a:a + width]
        return torch.from_numpy(out), torch.from_numpy(index)

    def window(self, i: int) -> tuple[int, int]:
        """(source, first token) of window `i`."""
        if not 0 <= i < self.n:
            raise IndexError(i)
        s = bisect.bisect_right(self._base, i) - 1
        return self._src[s], self._start[s] + (i - self._base[s]) * self.context

    def __getitem__(self, i: int | list[int]) -> tuple[torch.Tensor, int | torch.Tensor]:
        """Window `i`, or the batch of windows of the index list `i`: ((len(i), context + 1) ids, indices (len(i),)),
        copied straight into one int64 array (what `reads_batches` tells the trainer's loader)."""
        if self._arrays is None:
            self._arrays = [s.open() if isinstance(s, Shard) else s for s in self.sources]
        if isinstance(i, list):
            return self._batch(i)
        src, a = self.window(i)
        return torch.from_numpy(self._arrays[src][a:a + self.context + 1].astype(np.int64)), i


def whole(shards: Sequence[Shard]) -> list[Segment]:
    """One segment per shard: all its tokens."""
    return [(i, 0, s.tokens) for i, s in enumerate(shards)]


def cut_out(segments: Sequence[Segment], holes: Sequence[Segment]) -> list[Segment]:
    """`segments` less the token ranges `holes` (sorted or not): the pieces around each hole, in order."""
    by_source: dict[int, list[tuple[int, int]]] = {}
    for s, a, b in holes:
        by_source.setdefault(s, []).append((a, b))
    out = []
    for s, a, b in segments:
        pos = a
        for ha, hb in sorted(by_source.get(s, [])):
            if hb <= pos or ha >= b:
                continue
            if ha > pos:
                out.append((s, pos, ha))
            pos = max(pos, hb)
        if pos < b:
            out.append((s, pos, b))
    return out


def window_split(shards: Sequence[Shard], context: int, counts: Sequence[int], seed: int
                 ) -> tuple[list[Segment], list[list[Segment]]]:
    """(training segments, [split segments, …]): split j is `counts[j]` windows of the shards' window grid, the
    windows of lowest rank after those of the splits before it; training is every shard less the targets of
    the split windows: ids a + 1 … a + context of a split window at a are no training window's targets (id
    a + context stays the first input of the training window after it)."""
    grid = [(s.name, max(0, (s.tokens - 1) // context)) for s in shards]
    if sum(n for _, n in grid) <= sum(counts):
        raise UserError(f"the token shards of {Path(shards[0].path).parent} give {sum(n for _, n in grid):,} windows "
                        f"of {context} + 1 tokens: too few for a training split and {' + '.join(map(str, counts))} "
                        f"held-out windows")
    keys, splits, at = lowest_keys(grid, sum(counts), seed) if sum(counts) else [], [], 0
    for c in counts:
        splits.append(sorted((src, w * context, w * context + context + 1) for src, w in keys[at:at + c]))
        at += c
    holes = [(s, a + 1, b - 1) for split in splits for s, a, b in split]
    return cut_out(whole(shards), holes), splits
