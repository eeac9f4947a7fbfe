"""The validation split of every data kind (`compt.clip.data.carve`): carved from the training data by a hash of
each sample's key — after the held-out split, excluded from training, the same for a webdataset stream — or read
from ``data.val_path``; each kind's validation suite measures exactly the metrics it declares."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from compt.clip.data import ADAPTERS, _split_records, adapter, build_eval_suite, build_train_dataset, evaluate, real
from compt.clip.data.carve import MIN_SAMPLES, SPACE
from compt.clip.data.text import tokenize
from compt.clip.models import create_model, get_model_config
from compt.clip.settings import ClipDataConfig
from compt.config import config_from_dict, validate
from compt.errors import UserError
from tests.test_data_files import make_shard, png_bytes, write_csv, write_images
from tests.test_data_real import SVG, fake_clipart, fake_fashion
from tests.test_data_stream import write_shards

TEST = get_model_config("test/A")  # 16×16, context 16


def rank(key: str, seed: int) -> int:
    """The rule of `compt.clip.data.carve`, written out independently."""
    return int(hashlib.sha256(f"{seed}/{key}".encode()).hexdigest()[:16], 16)


def csv_set(folder: Path, n: int) -> tuple[Path, list[str]]:
    """A CSV of `n` PNGs whose captions name their row ("caption i"); returns (csv, keys)."""
    names = write_images(folder / "img", n)
    keys = [f"img/{name}" for name in names]
    return write_csv(folder / "train.csv", [(k, f"caption {i}") for i, k in enumerate(keys)]), keys


def clipart(root: Path) -> Path:
    """`fake_clipart` with 10 images per category (3 categories), each with a title of its own."""
    fake_clipart(root)
    for cat in ("animals", "food", "unsorted"):
        for j in range(6, 10):
            shutil.copy(root / "png" / cat / "item_00.png", root / "png" / cat / f"item_{j:02d}.png")
            (root / "svg" / cat / f"item_{j:02d}.svg").write_text(SVG.format(title=f"{cat} {j}", desc="", kw=cat))
    return root


def captions(dataset) -> set[str]:
    return {caps[0] for caps in dataset.captions}


# ----------------------------------------------------------------------------------------------- the rule
def test_the_validation_split_is_the_lowest_key_ranks_of_what_the_held_out_split_leaves(tmp_path: Path) -> None:
    path, keys = csv_set(tmp_path, 40)
    data = ClipDataConfig(kind="csv", path=str(path), eval_samples=6, val_samples=5, seed=4)
    train, held, val, _ = _split_records(data, carve=True)
    assert [r.key for r in held] == [r.key for r in _split_records(data, carve=False)[1]]   # unchanged by carving
    rest = [k for k in keys if k not in {r.key for r in held}]
    want = sorted(rest, key=lambda k: rank(k, 4))[:5]
    assert sorted(r.key for r in val) == sorted(want)
    assert sorted(keys, key=lambda k: rank(k, 4))[:5] != want   # ranking every key, held-out ones too, differs
    assert [r.key for r in train] == [k for k in rest if k not in want]   # the rest, in file order
    # at most a fifth of what the held-out split leaves: 34 // 5 = 6
    big = _split_records(ClipDataConfig(kind="csv", path=str(path), eval_samples=6, val_samples=100, seed=4), True)[2]
    assert len(big) == 6 and {r.key for r in val} <= {r.key for r in big}


def test_the_split_follows_the_keys_not_the_row_order(tmp_path: Path) -> None:
    path, keys = csv_set(tmp_path, 30)
    held_out = tmp_path / "held.csv"
    write_csv(held_out, [(keys[0], "held")])
    data = ClipDataConfig(kind="csv", path=str(path), eval_path=str(held_out), val_samples=6)
    val = {r.key for r in _split_records(data, carve=True)[2]}
    rows = path.read_text().splitlines()
    path.write_text("\n".join([rows[0], *reversed(rows[1:])]) + "\n")
    assert {r.key for r in _split_records(data, carve=True)[2]} == val


def test_carving_excludes_the_split_from_training_and_only_when_asked(tmp_path: Path) -> None:
    path, _ = csv_set(tmp_path, 40)
    data = ClipDataConfig(kind="csv", path=str(path), eval_samples=6, val_samples=5)
    plain, carved = build_train_dataset(data, TEST), build_train_dataset(data, TEST, carve=True)
    suite = build_eval_suite(data, TEST, validation=True)
    held = build_eval_suite(data, TEST)
    assert len(plain) == 34 and len(carved) == 29 and len(suite.retrieval.images) == 5
    lost = captions(plain) - captions(carved)   # the split came out of training, not out of the held-out split
    assert captions(carved) < captions(plain) and len(lost) == 5
    assert torch.equal(suite.retrieval.tokens, tokenize(sorted(lost, key=lambda c: int(c.split()[1])), 16))
    assert len(held.retrieval.images) == 6 and len({f"caption {i}" for i in range(40)} - captions(plain)) == 6


def test_too_few_samples_for_a_validation_split_is_one_line(tmp_path: Path) -> None:
    path, _ = csv_set(tmp_path, 24)   # 4 held out, 20 left: a fifth is 4 < 5
    data = ClipDataConfig(kind="csv", path=str(path), eval_samples=8)
    with pytest.raises(UserError, match=rf"too few samples for a validation split .*at least {MIN_SAMPLES}, this "
                                        rf"data gives 4\)") as e:
        build_train_dataset(data, TEST, carve=True)
    assert "\n" not in str(e.value)
    assert len(build_train_dataset(data, TEST)) == 20   # without a validation split, the data are fine


def test_val_path_is_the_users_own_split_and_training_keeps_everything(tmp_path: Path) -> None:
    path, _ = csv_set(tmp_path / "train", 30)
    own, keys = csv_set(tmp_path / "val", 12)
    data = ClipDataConfig(kind="csv", path=str(path), eval_samples=6, val_path=str(own), val_samples=7)
    suite = build_eval_suite(data, TEST, validation=True)
    want = sorted(sorted(range(12), key=lambda i: rank(keys[i], 0))[:7])   # at most val_samples, lowest ranks
    assert torch.equal(suite.retrieval.tokens, tokenize([f"caption {i}" for i in want], 16))
    with pytest.raises(UserError, match="data.val_path names a validation set of files"):
        validate(config_from_dict({"name": "x", "data": {"val_path": str(own)},
                                   "chain": [{"model": "test/A", "epochs": 1}]}))
    with pytest.raises(UserError, match="data.val_samples must be at least 1"):
        validate(config_from_dict({"name": "x", "data": {"val_samples": 0},
                                   "chain": [{"model": "test/A", "epochs": 1}]}))


# ----------------------------------------------------------------------------------------------- shards
def test_indexed_shards_carve_by_webdataset_key(tmp_path: Path) -> None:
    (tmp_path / "shards").mkdir()
    for s in range(2):
        make_shard(tmp_path / "shards" / f"{s:03d}.tar",
                   [{"png": png_bytes(i), "txt": f"shard {s} item {i}".encode()} for i in range(15)])
    data = ClipDataConfig(kind="wds", path=str(tmp_path / "shards" / "{000..001}.tar"), eval_samples=5, val_samples=5)
    train, held, val, _ = _split_records(data, carve=True)
    keys = [f"s{s:03d}_{i:04d}" for s in range(2) for i in range(15)]
    rest = [k for k in keys if k not in {r.key for r in held}]
    assert sorted(r.key for r in val) == sorted(sorted(rest, key=lambda k: rank(k, 0))[:5])
    assert len(train) == 20 and not {r.key for r in train} & {r.key for r in val}


def test_a_stream_skips_exactly_the_samples_its_validation_split_reads(tmp_path: Path) -> None:
    pattern = write_shards(tmp_path, 4, 10)   # keys s{shard}_{i:03d}, captions "thing n"
    data = ClipDataConfig(kind="wds-stream", path=pattern, num_samples=40, val_samples=8, seed=1,
                      eval_path=pattern)
    keys = {s * 10 + i: f"s{s}_{i:03d}" for s in range(4) for i in range(10)}
    below = [n for n, k in keys.items() if rank(k, 1) < SPACE * 8 // 40]   # p = min(8, 40 // 5) / 40
    assert 5 <= len(below) < 40
    stream = build_train_dataset(data, TEST, carve=True)
    batches = DataLoader(stream, batch_size=1)
    seen = [tuple(tok[0, 0].tolist()) for _, tok, _ in (b for _, b in zip(range(40 - len(below)), batches))]
    trained = {tuple(t.tolist()) for t in tokenize([f"thing {n}" for n in range(40) if n not in below], 16)}
    assert set(seen) == trained and len(seen) == len(trained)   # one pass: every training sample once, no other
    suite = build_eval_suite(data, TEST, validation=True)
    pick = sorted(sorted(below, key=lambda n: rank(keys[n], 1))[:8])
    assert torch.equal(suite.retrieval.tokens, tokenize([f"thing {n}" for n in pick], 16))
    assert len(build_train_dataset(data, TEST).urls) == 4 and build_train_dataset(data, TEST).skip_below == 0
    more = build_train_dataset(ClipDataConfig(**{**data.__dict__, "val_samples": 1000}), TEST, carve=True)
    assert more.skip_below == SPACE * 8 // 40   # a stream carves at most a fifth of its pass


# ----------------------------------------------------------------------------------------------- folders, real sets
def test_folder_carves_and_its_evaluation_leaves_the_split_out(tmp_path: Path) -> None:
    for c in ("cat", "dog"):
        write_images(tmp_path / "f" / c, 15)
    data = ClipDataConfig(kind="folder", path=str(tmp_path / "f"), val_samples=6)
    assert len(build_train_dataset(data, TEST)) == 30 and len(build_train_dataset(data, TEST, carve=True)) == 24
    held = build_eval_suite(data, TEST, carve=True).zeroshot[0]
    val = build_eval_suite(data, TEST, validation=True).zeroshot[0]
    assert len(held.labels) == 24 and len(val.labels) == 6   # the folder's evaluation reads its training images
    seen = [(int(y), bytes(x.numpy())) for t in (held, val) for x, y in zip(t.images.images, t.labels, strict=True)]
    assert len(set(seen)) == 30   # every image once: the two are disjoint


def test_fashion_mnist_carves_from_its_training_images(tmp_path: Path) -> None:
    data = ClipDataConfig(kind="fashion-mnist", path=str(fake_fashion(tmp_path / "fm")), num_samples=30,
                          eval_samples=12, probe_samples=0)
    pick = real.subset(30, 30, 0, stream=0)
    val_pos = sorted(sorted(range(30), key=lambda j: rank(str(pick[j]), 0))[:6])   # min(12, 30 // 5) = 6
    every = real.fashion_mnist(data, 16, "train", 30, stream=0).images
    train = build_train_dataset(data, TEST, carve=True)
    val = build_eval_suite(data, TEST, validation=True).zeroshot[0]
    assert torch.equal(val.images.images, every[val_pos])
    assert torch.equal(train.images.images, every[[j for j in range(30) if j not in val_pos]])


def test_openclipart_carves_after_its_held_out_split(tmp_path: Path) -> None:
    data = ClipDataConfig(kind="openclipart", path=str(clipart(tmp_path / "oca")), eval_samples=3,
                      val_samples=5, cache_dir=str(tmp_path / "cache"))
    held = build_eval_suite(data, TEST)
    val = build_eval_suite(data, TEST, validation=True)
    train = build_train_dataset(data, TEST, carve=True)
    assert len(train) == 22 and len(val.retrieval.images) == 5 and len(held.retrieval.images) == 3
    rows = [{tuple(t) for t in tokens.tolist()} for tokens in (
        held.retrieval.tokens, val.retrieval.tokens, tokenize([c[0] for c in train.captions], 16))]
    assert len(set.union(*rows)) == sum(map(len, rows)) == 30   # held-out, validation and training titles: disjoint


# ----------------------------------------------------------------------------------------------- what each measures
def _kind_data(kind: str, tmp_path: Path) -> ClipDataConfig:
    if kind == "synthetic":
        return ClipDataConfig(num_samples=16, eval_samples=8, probe_samples=0)
    if kind in ("csv", "wds", "wds-stream"):
        if kind == "csv":
            return ClipDataConfig(kind="csv", path=str(csv_set(tmp_path, 40)[0]), eval_samples=6)
        pattern = write_shards(tmp_path, 2, 15)
        return ClipDataConfig(kind=kind, path=pattern, eval_path=pattern, num_samples=30, eval_samples=6)
    if kind == "folder":
        for c in ("cat", "dog"):
            write_images(tmp_path / c, 15)
        return ClipDataConfig(kind="folder", path=str(tmp_path), val_samples=6)
    if kind == "fashion-mnist":
        return ClipDataConfig(kind=kind, path=str(fake_fashion(tmp_path)), num_samples=30, probe_samples=0)
    return ClipDataConfig(kind=kind, path=str(clipart(tmp_path)), eval_samples=3, val_samples=5,
                      cache_dir="none")


@pytest.mark.parametrize("kind", [k for k in ADAPTERS if k != "text"])
def test_each_kind_validates_on_exactly_the_metrics_it_declares(tmp_path: Path, kind: str) -> None:
    data = _kind_data(kind, tmp_path)
    torch.manual_seed(0)
    metrics = evaluate(create_model("test/A").eval(), build_eval_suite(data, TEST, validation=True))
    assert {k for k in ("zeroshot_top1", "retrieval_r1") if k in metrics} == set(adapter(kind).measures)


def test_a_run_says_its_validation_split_once(capsys) -> None:
    from compt.clip.paradigm import ClipData

    cfg = config_from_dict({"name": "x", "data": {"num_samples": 16, "eval_samples": 8, "probe_samples": 0},
                            "chain": [{"model": "test/A", "epochs": 1}, {"model": "tiny/ViT-N", "epochs": 1}]})
    data = ClipData(cfg)
    for model in ("test/A", "tiny/ViT-N", "test/A"):   # two input shapes: two suites, one line
        data.validator(get_model_config(model))
    err = capsys.readouterr().err
    assert err.count("compt: validation split (until/target): 8 samples of the synthetic data's own validation "
                     "stream") == 1, err
