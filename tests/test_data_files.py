"""Real formats on small files made here: CSV/TSV, webdataset shards, image folders, multi-caption, bad data."""

from __future__ import annotations

import io
import json
import logging
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compt.clip.data import build_eval_suite, build_train_dataset
from compt.clip.data.files import expand_braces
from compt.clip.data.images import normalize, resize_center_crop
from compt.clip.models import get_model_config
from compt.clip.settings import ClipDataConfig
from compt.errors import UserError

TEST = get_model_config("test/A")  # 16×16, context 16
COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 220), (230, 220, 40)]


def image(i: int, size: tuple[int, int] = (24, 20)) -> Image.Image:
    rng = np.random.default_rng(i)
    base = np.array(COLOURS[i % 4], dtype=np.float64)
    return Image.fromarray(np.clip(base + rng.normal(0, 10, (*size[::-1], 3)), 0, 255).astype(np.uint8))


def write_images(folder: Path, n: int, ext: str = "png") -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        name = f"img{i:03d}.{ext}"
        image(i).save(folder / name)
        names.append(name)
    return names


def write_csv(path: Path, rows: list[tuple[str, str]], header: tuple[str, str] = ("filepath", "caption"),
              sep: str = ",") -> Path:
    lines = [sep.join(header)] + [sep.join(f'"{c}"' if sep == "," else c for c in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def data(path: Path | str, **kw) -> ClipDataConfig:
    return ClipDataConfig(**{"kind": "csv", "path": str(path), "eval_samples": 4, **kw})


def test_csv_png_and_jpeg_relative_to_csv_folder(tmp_path: Path) -> None:
    names = write_images(tmp_path / "img", 10) + write_images(tmp_path / "jpg", 10, "jpg")
    rows = [(f"{'img' if n.endswith('png') else 'jpg'}/{n}", f"a colour {i % 4} square") for i, n in enumerate(names)]
    ds = build_train_dataset(data(write_csv(tmp_path / "train.csv", rows)), TEST)
    assert len(ds) == 16 and ds.deterministic  # 20 rows, 4 held out
    x, tok, i = ds[0]
    assert x.shape == (3, 16, 16) and tok.shape == (1, 16) and i == 0
    suite = build_eval_suite(data(tmp_path / "train.csv"), TEST)
    assert len(suite.retrieval.images) == 4 and not suite.zeroshot
    held = {bytes(t.numpy()) for t in suite.retrieval.images.images}
    assert not held & {bytes(t.numpy()) for t in ds.images.images}


def test_csv_pixels_match_open_clip_preprocessing(tmp_path: Path) -> None:
    import open_clip

    write_images(tmp_path, 6)
    rows = [(f"img{i:03d}.png", "x") for i in range(6)]
    ds = build_train_dataset(data(write_csv(tmp_path / "a.csv", rows), eval_path=str(tmp_path / "a.csv")), TEST)
    ref = open_clip.image_transform(16, is_train=False)(Image.open(tmp_path / "img002.png"))
    assert torch.allclose(ds[2][0], ref, atol=1e-6)


def test_tsv_custom_columns_and_root(tmp_path: Path) -> None:
    write_images(tmp_path / "root", 6)
    rows = [(f"img{i:03d}.png", f"caption {i}") for i in range(6)]
    (tmp_path / "meta").mkdir()
    csv = write_csv(tmp_path / "meta" / "a.tsv", rows, header=("path", "title"), sep="\t")
    cfg = data(csv, csv_separator="\t", csv_img_key="path", csv_caption_key="title", root=str(tmp_path / "root"),
               eval_path=str(csv))
    assert len(build_train_dataset(cfg, TEST)) == 6


def test_csv_missing_columns_names_the_columns_found(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "a.csv", [("x.png", "c")], header=("image", "text"))
    with pytest.raises(UserError, match=r"no column 'filepath', 'caption' \(columns found: 'image', 'text'\)"):
        build_train_dataset(data(csv), TEST)


def test_multi_caption_rows_and_separator(tmp_path: Path) -> None:
    write_images(tmp_path, 5)
    rows = [(f"img{i:03d}.png", f"raw {i}") for i in range(5)]
    rows += [(f"img{i:03d}.png", f"Long one of {i}. Long two of {i}.|extra {i}") for i in range(5)]
    cfg = data(write_csv(tmp_path / "a.csv", rows), eval_path=str(tmp_path / "a.csv"), captions_per_image=4,
               eval_samples=5, caption_separator="|")
    ds = build_train_dataset(cfg, TEST)
    assert len(ds) == 5 and ds.captions[1] == ("raw 1", "Long one of 1. Long two of 1.", "extra 1")
    slots = ds.tokens[1]
    from compt.clip.data.text import tokenize

    want = tokenize(["raw 1"], 16)[0]
    assert torch.equal(slots[0].long(), want) and len({tuple(s.tolist()) for s in slots}) == 4
    assert torch.equal(build_train_dataset(cfg, TEST).tokens, ds.tokens)  # deterministic per (seed, index)
    suite = build_eval_suite(cfg, TEST)  # retrieval keeps every caption of an image
    assert suite.retrieval.text_to_image.tolist() == [i for i in range(5) for _ in range(3)]


def make_shard(path: Path, samples: list[dict[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for i, sample in enumerate(samples):
            for ext, payload in sample.items():
                info = tarfile.TarInfo(f"s{path.stem}_{i:04d}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return path


def png_bytes(i: int, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image(i).save(buf, format=fmt)
    return buf.getvalue()


def test_webdataset_shards_txt_lines_and_json(tmp_path: Path) -> None:
    (tmp_path / "shards").mkdir()
    for s in range(3):
        make_shard(tmp_path / "shards" / f"{s:03d}.tar", [
            {"jpg": png_bytes(4 * s + i, "JPEG"), "txt": f"raw {s}-{i}\nsecond line {s}-{i}\n".encode(),
             "json": json.dumps({"captions": [f"json caption {s}-{i}"]}).encode()} for i in range(4)])
    assert expand_braces("a/{000..002}.tar") == ["a/000.tar", "a/001.tar", "a/002.tar"]
    cfg = ClipDataConfig(kind="wds", path=str(tmp_path / "shards" / "{000..002}.tar"), eval_samples=3,
                     captions_per_image=3)
    ds = build_train_dataset(cfg, TEST)
    assert len(ds) == 10
    assert all(len(c) == 3 and c[0].startswith("raw") for c in ds.captions)
    assert len(build_eval_suite(cfg, TEST).retrieval.images) == 2  # min(eval_samples, 12 // 5)


def test_image_folder_zero_shot(tmp_path: Path) -> None:
    for c, name in enumerate(["red_thing", "green thing", "blue"]):
        folder = tmp_path / "f" / name
        folder.mkdir(parents=True)
        for j in range(3):
            image(c + 4 * j).save(folder / f"{j}.png")
    suite = build_eval_suite(ClipDataConfig(kind="folder", path=str(tmp_path / "f")), TEST)
    task = suite.zeroshot[0]
    assert task.classnames == ("blue", "green thing", "red thing")
    assert task.labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    extra = build_eval_suite(ClipDataConfig(num_samples=8, eval_samples=8, probe_samples=0,
                                        zeroshot_folder=str(tmp_path / "f")), TEST)
    assert extra.zeroshot[-1].name == "folder" and len(extra.zeroshot) == 6
    train = build_train_dataset(ClipDataConfig(kind="folder", path=str(tmp_path / "f"), captions_per_image=2), TEST)
    assert len(train) == 9 and train[0][1].shape == (2, 16)


# ----------------------------------------------------------------------------------------------- bad data
def bad_set(tmp_path: Path, n_good: int = 98) -> list[tuple[str, str]]:
    write_images(tmp_path, n_good)
    rows = [(f"img{i:03d}.png", f"caption {i}") for i in range(n_good)]
    return rows


def test_bad_samples_skipped_counted_and_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = bad_set(tmp_path, 300)
    rows[3] = ("missing.png", "a caption")
    rows[5] = (rows[5][0], "   ")                                           # empty caption
    data_bytes = (tmp_path / "img007.png").read_bytes()
    (tmp_path / "img007.png").write_bytes(data_bytes[: len(data_bytes) // 2])  # truncated PNG
    csv = write_csv(tmp_path / "a.csv", rows)
    with caplog.at_level(logging.WARNING, logger="compt.clip.data"):
        ds = build_train_dataset(data(csv, eval_path=str(csv)), TEST)
    assert len(ds) == 297
    msg = caplog.text
    assert "3 of 300 samples" in msg and "missing.png (missing file)" in msg and "empty caption" in msg
    assert "img007.png" in msg


def test_too_many_bad_samples_is_a_user_error(tmp_path: Path) -> None:
    rows = bad_set(tmp_path, 50)
    rows += [(f"gone{i}.png", "c") for i in range(2)]                      # 2 of 52 = 3.8 % > 1 %
    csv = write_csv(tmp_path / "a.csv", rows)
    with pytest.raises(UserError, match=r"2 of 52 samples .* more than data.max_bad_fraction = 0.01"):
        build_train_dataset(data(csv, eval_path=str(csv)), TEST)
    assert len(build_train_dataset(data(csv, eval_path=str(csv), max_bad_fraction=0.05), TEST)) == 50


def test_lazy_decoding_substitutes_bad_images_deterministically(tmp_path: Path) -> None:
    rows = bad_set(tmp_path, 200)
    (tmp_path / "img004.png").write_bytes(b"not a png at all")
    csv = write_csv(tmp_path / "a.csv", rows)
    ds = build_train_dataset(data(csv, eval_path=str(csv), predecode_max=10), TEST)
    assert len(ds) == 200
    x, tok, i = ds[4]                                   # replaced by the next good image, caption kept
    assert i == 4 and torch.equal(x, ds[5][0]) and len(ds.images.bad) == 1
    want = normalize(resize_center_crop(Image.open(tmp_path / "img005.png"), 16))
    assert torch.allclose(x, want)
    batches = list(torch.utils.data.DataLoader(ds, batch_size=64, num_workers=2))  # no crash mid-epoch
    assert sum(len(b[2]) for b in batches) == 200


def test_lazy_decoding_fails_loudly_past_the_threshold(tmp_path: Path) -> None:
    rows = bad_set(tmp_path, 100)
    for i in range(3):
        (tmp_path / f"img{i:03d}.png").write_bytes(b"garbage")
    csv = write_csv(tmp_path / "a.csv", rows)
    ds = build_train_dataset(data(csv, eval_path=str(csv), predecode_max=10), TEST)
    with pytest.raises(UserError, match="max_bad_fraction"):
        for i in range(len(ds)):
            ds[i]


def test_truncated_shard_and_sample_without_image(tmp_path: Path) -> None:
    samples = [{"png": png_bytes(i), "txt": f"caption {i}".encode()} for i in range(60)]
    samples.append({"txt": b"orphan caption"})
    shard = make_shard(tmp_path / "000.tar", samples)
    raw = shard.read_bytes()
    (tmp_path / "001.tar").write_bytes(raw[: len(raw) // 3])               # truncated copy
    cfg = ClipDataConfig(kind="wds", path=str(tmp_path / "{000..001}.tar"), eval_samples=1, max_bad_fraction=0.2)
    ds = build_train_dataset(cfg, TEST)
    assert 60 <= len(ds) < 100
    with pytest.raises(UserError, match="max_bad_fraction"):
        build_train_dataset(ClipDataConfig(kind="wds", path=str(tmp_path / "{000..001}.tar"), eval_samples=1), TEST)


def test_clear_errors_for_missing_inputs(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="CSV file not found"):
        build_train_dataset(data(tmp_path / "nope.csv"), TEST)
    with pytest.raises(UserError, match="no shard found"):
        build_train_dataset(ClipDataConfig(kind="wds", path=str(tmp_path / "{0..3}.tar")), TEST)
    with pytest.raises(UserError, match="image folder not found"):
        build_eval_suite(ClipDataConfig(kind="folder", path=str(tmp_path / "none")), TEST)
    write_images(tmp_path, 3)
    csv = write_csv(tmp_path / "a.csv", [(f"img{i:03d}.png", "c") for i in range(3)])
    with pytest.raises(UserError, match="too few samples to hold out"):
        build_eval_suite(data(csv), TEST)
