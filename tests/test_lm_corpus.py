"""Token shards and document corpora for language models: windows, splits by key, the token cache, bad inputs.

Every corpus is made here: token shards written with numpy, a JSONL file, a Parquet file and a ``save_to_disk``
folder written with pyarrow / datasets.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from compt.config import config_from_dict
from compt.errors import UserError
from compt.lm import corpus as lm_corpus
from compt.lm.corpus import document_split, open_corpus, tokenized_corpus
from compt.lm.models import get_lm_config
from compt.lm.shards import SegmentWindows, cut_out, lowest_keys, open_shards, whole, window_split
from compt.lm.tokenizers import TokenizerSource, load_tokenizer

CTX = 16                      # lm/test-* context; vocabulary 264, byte tokenizer (257 tokens, EOS 256)
TEXTS = [f"doc {i}: " + "abc " * (i % 9 + 1) for i in range(120)]


def write_tokens(folder: Path, sizes: tuple[int, ...] = (1000, 777), seed: int = 0, dtype=np.uint16) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng, out = np.random.default_rng(seed), []
    for i, n in enumerate(sizes):
        out.append(folder / f"part-{i}.bin")
        rng.integers(0, 257, size=n).astype(dtype).tofile(out[-1])
    return out


def raw(kind: str, path: Path, **data) -> dict:
    return {"name": "lm", "baselines": False,
            "data": {"kind": kind, "path": str(path), "num_samples": 10_000, "eval_samples": 6, **data},
            "train": {"batch_size": 4, "warmup_steps": 1, "log_every_steps": 1},
            "chain": [{"model": "lm/test-A", "epochs": 1}]}


def targets(ds: SegmentWindows) -> set[tuple[int, int]]:
    """(source, token position) of every token a window of `ds` predicts."""
    out = set()
    for i in range(len(ds)):
        s, a = ds.window(i)
        out.update((s, p) for p in range(a + 1, a + ds.context + 1))
    return out


# ----------------------------------------------------------------------------------------------- token shards
def test_windows_read_the_shards_at_stride_context(tmp_path: Path) -> None:
    files = write_tokens(tmp_path)
    shards = open_shards(tmp_path, model_vocab=264, tokenizer_vocab=257, eos_id=256)
    ds = SegmentWindows(shards, whole(shards), CTX)
    assert len(ds) == 999 // CTX + 776 // CTX   # a shard's tail of < context + 1 tokens is dropped
    ids = [np.fromfile(f, dtype=np.uint16).astype(np.int64) for f in files]
    first_of_second = 999 // CTX
    assert torch.equal(ds[3][0], torch.from_numpy(ids[0][48:65]))
    assert torch.equal(ds[first_of_second + 2][0], torch.from_numpy(ids[1][32:49]))
    assert ds[5][1] == 5 and ds[first_of_second - 1][0].shape == (CTX + 1,)


@pytest.mark.parametrize("workers", [0, 1])
def test_the_trainer_loader_reads_whole_batches_equal_to_the_windows(tmp_path: Path, workers: int) -> None:
    from compt.distributed import DistInfo
    from compt.train.loader import train_loader
    from compt.train.sampler import StepBatchSampler

    write_tokens(tmp_path)
    shards = open_shards(tmp_path, model_vocab=264, tokenizer_vocab=257, eos_id=256)
    ds = SegmentWindows(shards, cut_out(whole(shards), [(0, 100, 300)]), CTX)
    sampler = StepBatchSampler(len(ds), batch_size=8, accum=2, seed=0, start=3, stop=20, shard_id=1, num_shards=2)
    loader = train_loader(ds, sampler, workers=workers, info=DistInfo(rank=1, world_size=2, local_rank=1,
                                                                   device=torch.device("cpu")))
    batches = list(loader)
    assert len(batches) == len(sampler) == 34
    for (tokens, index), want in zip(batches, sampler, strict=True):
        assert index.tolist() == want
        assert torch.equal(tokens, torch.stack([ds[i][0] for i in want]))
    with pytest.raises(IndexError):
        ds[[0, len(ds)]]


def test_window_split_is_by_hash_disjoint_and_keeps_the_grid(tmp_path: Path) -> None:
    write_tokens(tmp_path)
    shards = open_shards(tmp_path, model_vocab=264, tokenizer_vocab=257, eos_id=256)
    train_segs, (held_segs, val_segs) = window_split(shards, CTX, [6, 5], seed=3)
    train, held, val = (SegmentWindows(shards, s, CTX) for s in (train_segs, held_segs, val_segs))
    assert (len(held), len(val), len(train)) == (6, 5, len(SegmentWindows(shards, whole(shards), CTX)) - 11)
    assert not targets(train) & targets(held) and not targets(train) & targets(val)
    assert not targets(held) & targets(val)
    assert all(a % CTX == 0 for i in range(len(train)) for a in [train.window(i)[1]])  # the same window grid
    keys = lowest_keys([(s.name, (s.tokens - 1) // CTX) for s in shards], 11, seed=3)
    assert sorted((s, w * CTX) for s, w in keys[:6]) == [held.window(i) for i in range(6)]
    again = window_split(shards, CTX, [6, 5], seed=3)
    assert again == (train_segs, [held_segs, val_segs])
    assert window_split(shards, CTX, [6, 5], seed=4)[1][0] != held_segs   # the seed picks other windows


def test_cut_out_keeps_the_pieces_around_each_hole() -> None:
    assert cut_out([(0, 0, 100), (1, 0, 50)], [(0, 10, 20), (0, 15, 30), (1, 40, 60)]) == \
        [(0, 0, 10), (0, 30, 100), (1, 0, 40)]


def test_a_large_token_folder_opens_without_reading_it(tmp_path: Path) -> None:
    """1 GiB of (sparse) tokens: opening reads sizes and three small samples, not the file (page faults)."""
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(1 << 30)
    before = resource.getrusage(resource.RUSAGE_SELF)
    shards = open_shards(tmp_path, model_vocab=264, tokenizer_vocab=257, eos_id=256)
    train, (held,) = window_split(shards, 1024, [100], seed=0)
    after = resource.getrusage(resource.RUSAGE_SELF)
    faults = after.ru_minflt + after.ru_majflt - before.ru_minflt - before.ru_majflt
    assert len(SegmentWindows(shards, train, 1024)) == (1 << 29) // 1024 - 1 - 100
    assert faults < 20_000, faults   # reading the file would fault in 262,144 pages


# ----------------------------------------------------------------------------------------------- documents
@pytest.fixture(scope="module")
def doc_folder(tmp_path_factory) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("docs")
    with open(root / "a.jsonl", "w") as f:
        for t in TEXTS[:70]:
            f.write(json.dumps({"id": len(t), "text": t}) + "\n")
    (root / "more").mkdir()
    pq.write_table(pa.table({"text": TEXTS[70:]}), root / "more" / "b.parquet")
    return root


def tokenizer(_tmp_path: Path | None = None):
    return load_tokenizer(TokenizerSource("byte"), vocab_size=264)


def test_documents_are_tokenised_per_file_with_eos_and_cached(doc_folder: Path, tmp_path: Path,
                                                              monkeypatch) -> None:
    tok = tokenizer(tmp_path)
    docs = tokenized_corpus(doc_folder, "text", tok, tmp_path / "fallback")
    assert [d.shard.name for d in docs] == ["a.jsonl", "more/b.parquet"]
    want = [np.append(np.frombuffer(t.encode(), dtype=np.uint8), 256) for t in TEXTS]
    assert np.array_equal(docs[0].shard.open(), np.concatenate(want[:70]))
    assert np.array_equal(docs[1].shard.open(), np.concatenate(want[70:]))
    assert docs[1].ends.tolist() == np.cumsum([w.size for w in want[70:]]).tolist()
    assert (doc_folder / ".compt-tokens").is_dir() and not (tmp_path / "fallback").exists()
    monkeypatch.setattr(lm_corpus, "_tokenize", lambda *a: pytest.fail("tokenised again"))
    tokenized_corpus(doc_folder, "text", tok, tmp_path / "fallback")   # read back from the cache


def test_a_changed_file_is_tokenised_again(tmp_path: Path) -> None:
    """An edit that keeps the file's size is seen by its modification time."""
    tok, f = tokenizer(tmp_path), tmp_path / "d" / "a.jsonl"
    f.parent.mkdir()
    f.write_text(json.dumps({"text": "one"}) + "\n")
    assert tokenized_corpus(f.parent, "text", tok, tmp_path / "fb")[0].shard.open().tolist() == [111, 110, 101, 256]
    f.write_text(json.dumps({"text": "two"}) + "\n")
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 1_000_000))
    assert tokenized_corpus(f.parent, "text", tok, tmp_path / "fb")[0].shard.open().tolist() == [116, 119, 111, 256]


def test_an_unwritable_data_folder_caches_in_the_run(tmp_path: Path) -> None:
    assert lm_corpus.cache_folder(tmp_path / "a-file" if (tmp_path / "a-file").write_text("x") else tmp_path,
                                  tmp_path / "run-cache") == tmp_path / "run-cache"


def test_a_datasets_folder_reads_like_jsonl(doc_folder: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"body": TEXTS[:70]}).save_to_disk(str(tmp_path / "ds"))
    tok = tokenizer(tmp_path)
    got = tokenized_corpus(tmp_path / "ds", "body", tok, tmp_path / "fb")
    want = tokenized_corpus(doc_folder / "a.jsonl", "text", tok, tmp_path / "fb")
    assert np.array_equal(np.concatenate([d.shard.open() for d in got]), want[0].shard.open())


def test_document_split_takes_whole_documents_disjoint_from_training(doc_folder: Path, tmp_path: Path) -> None:
    docs = tokenized_corpus(doc_folder, "text", tokenizer(tmp_path), tmp_path / "fb")
    train_segs, (held, val) = document_split(docs, CTX, [3, 2], seed=0)
    spans = {(s, int(d.ends[j - 1]) if j else 0, int(d.ends[j])) for s, d in enumerate(docs)
             for j in range(d.ends.size)}
    inside = [sp for sp in spans if any(s == sp[0] and a <= sp[1] and sp[2] <= b for s, a, b in train_segs)]
    assert len(spans) - len(inside) >= 2                       # some documents left training …
    for s, a, b in spans - set(inside):                          # … whole, each in exactly one split
        ids = docs[s].shard.open()[a:b]
        assert (_contains(held, ids)) != (_contains(val, ids))
        assert not any(s == t and a < tb and ta < b for t, ta, tb in train_segs)
    assert held[-1] == 256 and val[-1] == 256 and held.size >= 3 * CTX + 1 and val.size >= 2 * CTX + 1
    assert document_split(docs, CTX, [3, 2], seed=0)[0] == train_segs


def _contains(hay: np.ndarray, needle: np.ndarray) -> bool:
    return any(np.array_equal(hay[i:i + needle.size], needle) for i in range(hay.size - needle.size + 1))


def test_open_corpus_documents_gives_held_out_and_carved_validation(doc_folder: Path, tmp_path: Path) -> None:
    model = get_lm_config("lm/test-A")
    data = config_from_dict(raw("documents", doc_folder, eval_samples=4)).data
    train, held, corpus = open_corpus(data, model, tmp_path / "data", tokenizer(), carve=3)
    assert (len(held), len(corpus.carved)) == (4, 3) and len(train) > 100
    limited = config_from_dict(raw("documents", doc_folder, num_samples=10)).data
    train, _, corpus = open_corpus(limited, model, tmp_path / "data", tokenizer(), carve=None)
    assert len(train) == 10 and corpus.carved is None
    other_field = config_from_dict(raw("documents", doc_folder, text_field="body")).data
    with pytest.raises(UserError, match=r"a\.jsonl:1 has no text field 'body' \(data\.text_field; it has: id, text\)"):
        open_corpus(other_field, model, tmp_path / "data", tokenizer(), carve=None)


def many_files(root: Path, files: int = 12, per_file: int = 10) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for k in range(files):
        with open(root / f"part-{k:02d}.jsonl", "w") as f:
            for t in TEXTS[k * per_file:(k + 1) * per_file]:
                f.write(json.dumps({"text": t}) + "\n")
    return root


def cached(root: Path) -> list[str]:
    return sorted(p.name.split(".")[0] for p in (root / lm_corpus.CACHE_DIR).glob("*.json"))


def test_documents_are_tokenised_only_as_far_as_the_run_needs(tmp_path: Path, monkeypatch) -> None:
    root, model = many_files(tmp_path / "docs"), get_lm_config("lm/test-A")
    few = config_from_dict(raw("documents", root, eval_samples=4, num_samples=4)).data
    train, held, _ = open_corpus(few, model, tmp_path / "data", tokenizer(), carve=None)
    first = cached(root)
    assert len(train) == 4 and 1 <= len(first) < 6 and first == [f"part-{k:02d}" for k in range(len(first))]
    # the held-out split depends on eval_samples alone: not on num_samples, a carved validation split, or the ranks
    everything = config_from_dict(raw("documents", root, eval_samples=4)).data
    train_all, held_all, corpus = open_corpus(everything, model, tmp_path / "data", tokenizer(), carve=30)
    assert len(cached(root)) == 12 and len(train_all) > 40 and len(corpus.carved) == 30
    assert np.array_equal(held.sources[0], held_all.sources[0])
    for rank in ("0", "1"):
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", rank)
        again, held2, _ = open_corpus(few, model, tmp_path / "data", tokenizer(), carve=None)
        assert [again[i][0].tolist() for i in range(4)] == [train[i][0].tolist() for i in range(4)]
        assert np.array_equal(held2.sources[0], held.sources[0])


# ----------------------------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("make, match", [
    (lambda d: np.r_[np.zeros(200_000), [300], np.zeros(200_000)].astype(np.uint16).tofile(d / "x.bin"),
     r"x\.bin holds id 300, not below the model's vocabulary \(264\)"),
    (lambda d: (d / "x.bin").write_bytes(b""), r"token shard .*x\.bin is empty"),
    (lambda d: (d / "x.bin").write_bytes(b"\x01\x00\x02"), r"x\.bin has 3 bytes, not a whole number of uint16"),
    (lambda d: (np.ones(5, np.uint16).tofile(d / "x.bin"), (d / "tokens.json").write_text('{"dtype": "uint32"}')),
     r"x\.bin has 10 bytes, not a whole number of uint32"),
    (lambda d: (np.ones(6, np.uint16).tofile(d / "x.bin"), (d / "tokens.json").write_text('{"vocab_size": 50257}')),
     r"tokens\.json: vocab_size 50,257 is larger than the model's vocabulary \(264\)"),
    (lambda d: (np.ones(6, np.uint16).tofile(d / "x.bin"), (d / "tokens.json").write_text('{"vocab_size": 260}')),
     r"tokens\.json: vocab_size 260 is larger than the run tokenizer's \(257\)"),
    (lambda d: (np.ones(6, np.uint16).tofile(d / "x.bin"), (d / "tokens.json").write_text('{"eos_id": 0}')),
     r"tokens\.json: eos_id 0 is not the run tokenizer's end-of-document id 256"),
    (lambda d: (np.ones(6, np.uint16).tofile(d / "x.bin"),
                (d / "tokens.json").write_text('{"dtype": "uint16", "vocab_size": 70000}')),
     r"tokens\.json: dtype uint16 cannot hold ids of a 70,000-token vocabulary"),
    (lambda d: (d / "x.txt").write_text("hi"), r"holds no \.bin files"),
])
def test_bad_token_shards_are_one_line_errors_naming_the_file(tmp_path: Path, make, match) -> None:
    make(tmp_path)
    with pytest.raises(UserError, match=match) as e:
        open_shards(tmp_path, model_vocab=264, tokenizer_vocab=257, eos_id=256)
    assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)


@pytest.mark.parametrize("make, match", [
    (lambda d: (d / "a.jsonl").write_text('{"text": "x"}\n{"body": "y"}\n'),
     r"a\.jsonl:2 has no text field 'text' \(data\.text_field; it has: body\)"),
    (lambda d: (d / "a.jsonl").write_text('{"text": 3}\n'), r"a\.jsonl:1: text field 'text' is int"),
    (lambda d: (d / "a.jsonl").write_text("{oops\n"), r"a\.jsonl:1 is not JSON"),
    (lambda d: (d / "a.jsonl").write_text("\n"), r"document file .*a\.jsonl holds no documents"),
    (lambda d: __import__("pyarrow.parquet").parquet.write_table(
        __import__("pyarrow").table({"body": ["x"]}), d / "a.parquet"),
     r"a\.parquet has no text field 'text' \(data\.text_field; its columns: body\)"),
    (lambda d: (d / "ds").mkdir() or (d / "ds" / "state.json").write_text("{}"),
     r"datasets folder .*ds does not load"),
])
def test_bad_documents_are_one_line_errors_naming_the_file(tmp_path: Path, make, match) -> None:
    make(tmp_path)
    path = tmp_path / "ds" if (tmp_path / "ds").exists() else tmp_path
    with pytest.raises(UserError, match=match) as e:
        tokenized_corpus(path, "text", tokenizer(tmp_path), tmp_path / "fb")
    assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)


def test_a_missing_datasets_library_names_the_extra(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "state.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(UserError, match=r"need the datasets package: pip install 'compt\[lm\]'"):
        tokenized_corpus(tmp_path / "ds", "text", tokenizer(tmp_path), tmp_path / "fb")


def test_bpe_is_refused_for_token_and_document_corpora(doc_folder: Path) -> None:
    from compt.paradigm import chain_rules

    with pytest.raises(UserError, match="fitted to a text corpus"):
        chain_rules(config_from_dict(raw("documents", doc_folder, tokenizer="bpe")))


def test_the_byte_tokenizer_ends_documents_with_its_eos() -> None:
    tok = tokenizer()
    assert tok.eos_id == 256 and tok.vocab_size == 257 and tok.encode("é").tolist() == [0xC3, 0xA9]


@pytest.mark.parametrize("kind", ["tokens", "documents"])
def test_the_kinds_are_for_language_models_only(tmp_path: Path, kind: str) -> None:
    from compt.config import validate

    validate(config_from_dict(raw(kind, tmp_path)))
    clip = raw(kind, tmp_path) | {"chain": [{"model": "test/A", "epochs": 1}]}
    with pytest.raises(UserError, match=f'kind = "{kind}" is for language-model chains'):
        validate(config_from_dict(clip))


def test_nanogpt_train_and_val_files_as_path_and_val_path(tmp_path: Path) -> None:
    from compt.lm.data import LMData

    train, val = write_tokens(tmp_path / "owt", sizes=(2000, 500))
    cfg = config_from_dict(raw("tokens", train, val_path=str(val), val_samples=7))
    data = LMData(cfg, tmp_path / "run")
    split = data.validation_split()
    assert len(split) == 7 and {split.window(i)[0] for i in range(7)} == {0}
    want = np.fromfile(val, dtype=np.uint16)[:CTX + 1].astype(np.int64)
    assert torch.equal(split[0][0], torch.from_numpy(want))
    assert len(data.train_set(None)) == (2000 - 1) // CTX - 6   # all of train.bin but the held-out windows
    assert set(data.fingerprint()) == {"part-0.bin"}


def test_bench_tokens_reads_identical_batches_and_reports_measured_numbers() -> None:
    import argparse

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_tokens

    args = argparse.Namespace(tokens=200_000, shards=2, context=64, batch=8, steps=6, rounds=1, vocab=300)
    r = bench_tokens.measure(args)   # asserts every reader's batches equal compt's
    assert set(r["speed"]) == {"compt", "memmap, nanoGPT get_batch", "memmap, copy into one array"}
    text = bench_tokens.markdown(args, r, "python benchmarks/bench_tokens.py")
    assert f"**{r['ratio']:.3f}**" in text and f"{r['speed']['compt']:,.0f}" in text


def test_documents_tokenised_with_a_hugging_face_tokenizer_train_and_key_the_cache(doc_folder: Path,
                                                                                   tmp_path: Path) -> None:
    """A documents run with a Hugging Face tokenizer folder: documents end with its EOS, the cache entries are
    keyed by it (a byte-level run of the same files makes its own), and the run trains and records it."""
    from test_lm_tokenizers import bpe, save_folder

    from compt.chain import train_run

    folder = save_folder(bpe(262), tmp_path / "tok")
    hf = load_tokenizer(TokenizerSource("hf", str(folder)), vocab_size=264)
    docs = tokenized_corpus(doc_folder, "text", hf, tmp_path / "fb")
    assert np.array_equal(docs[0].shard.open()[: len(hf.encode(TEXTS[0])) + 1],
                          np.append(hf.encode(TEXTS[0]), hf.eos_id))
    byte_docs = tokenized_corpus(doc_folder, "text", tokenizer(), tmp_path / "fb")
    assert docs[0].shard.path != byte_docs[0].shard.path
    cfg = config_from_dict(raw("documents", doc_folder, tokenizer=str(folder), num_samples=16, eval_samples=4))
    run = tmp_path / "run"
    train_run(cfg, run, progress=False)
    lineage = json.loads((run / "chain" / "01-lm_test-A" / "lineage.json").read_text())
    assert lineage["tokenizer"]["sha256"] == hf.identity
