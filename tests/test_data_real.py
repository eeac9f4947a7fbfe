"""Fashion-MNIST and Open Clip Art adapters: parsers on files made here, the real packages when installed."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from compt.clip.data import build_eval_suite, build_train_dataset, real
from compt.clip.models import get_model_config
from compt.clip.settings import ClipDataConfig
from compt.errors import UserError

TEST = get_model_config("test/A")
HAVE_FASHION = Path(real.FASHION_DIR, "t10k-images-idx3-ubyte.gz").is_file()
HAVE_CLIPART = Path(real.OPENCLIPART_DIR, "png").is_dir() and Path(real.OPENCLIPART_DIR, "svg").is_dir()


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def fake_fashion(root: Path, n: int = 30) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split in ("train", "t10k"):
        write_idx(root / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return root


def test_fashion_mnist_adapter_on_idx_files(tmp_path: Path) -> None:
    cfg = ClipDataConfig(kind="fashion-mnist", path=str(fake_fashion(tmp_path / "fm")), num_samples=20, eval_samples=12,
                     probe_samples=10, captions_per_image=3)
    ds = build_train_dataset(cfg, TEST)
    image, tokens, _ = ds[0]
    assert len(ds) == 20 and image.shape == (3, 16, 16) and tokens.shape == (3, 16)
    assert all(len(set(c)) == 3 and any(name in c[0] for name in real.FASHION_CLASSES) for c in ds.captions)
    grey = ds.images.images[0]
    assert (grey[0] == grey[1]).all() and (grey[1] == grey[2]).all()  # grey → 3 equal channels
    task = build_eval_suite(cfg, TEST).zeroshot[0]
    assert task.name == "fashion-mnist" and len(task.labels) == 12 and len(task.probe_labels) == 10
    assert task.classnames == real.FASHION_CLASSES


def test_fashion_mnist_missing_files_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"Fashion-MNIST files not found under .*install Debian package "
                                        r"dataset-fashion-mnist"):
        build_train_dataset(ClipDataConfig(kind="fashion-mnist", path=str(tmp_path)), TEST)


@pytest.mark.skipif(not HAVE_FASHION, reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_real_files() -> None:
    cfg = ClipDataConfig(kind="fashion-mnist", num_samples=64, eval_samples=50, probe_samples=20)
    assert len(build_train_dataset(cfg, TEST)) == 64
    suite = build_eval_suite(cfg, TEST)
    assert len(suite.zeroshot[0].labels) == 50 and set(suite.zeroshot[0].labels.tolist()) <= set(range(10))


SVG = """<?xml version="1.0"?><svg xmlns:dc="http://purl.org/dc/elements/1.1/"><metadata><rdf:RDF><cc:Work>
<dc:title>{title}</dc:title><dc:description>{desc}</dc:description>
<dc:subject><rdf:Bag><rdf:li>unsorted</rdf:li><rdf:li>{kw}</rdf:li></rdf:Bag></dc:subject>
<dc:creator><cc:Agent><dc:title>Someone</dc:title></cc:Agent></dc:creator></cc:Work></rdf:RDF></metadata></svg>"""


def fake_clipart(root: Path, n_per: int = 6) -> Path:
    for c, cat in enumerate(("animals", "food", "unsorted")):
        for j in range(n_per):
            rel = Path(cat) / f"item_{j:02d}.png"
            (root / "png" / cat).mkdir(parents=True, exist_ok=True)
            (root / "svg" / cat).mkdir(parents=True, exist_ok=True)
            rgba = np.zeros((20, 20, 4), np.uint8)
            rgba[4:16, 4:16] = (60 * c, 200, 40 * j, 255)
            Image.fromarray(rgba, "RGBA").save(root / "png" / rel)
            (root / "svg" / rel.with_suffix(".svg")).write_text(
                SVG.format(title=f"{cat} {j} &amp; co", desc=f"A {cat}. Number {j}." if j % 2 else "", kw=cat))
    return root


def test_openclipart_adapter_on_made_files(tmp_path: Path) -> None:
    root = fake_clipart(tmp_path / "oca")
    caps = real.svg_captions(root / "svg" / "food" / "item_01.svg", "fallback")
    assert caps == ("food 1 & co", "A food. Number 1.", "clip art of food 1 & co.", "keywords: food.")
    cfg = ClipDataConfig(kind="openclipart", path=str(root), eval_samples=3, captions_per_image=3,
                     cache_dir=str(tmp_path / "cache"))
    ds = build_train_dataset(cfg, TEST)
    assert len(ds) == 15 and ds[0][1].shape == (3, 16)
    corner = ds.images.images[0][:, 0, 0]  # transparent corner composited on white
    assert corner.tolist() == [255, 255, 255]
    suite = build_eval_suite(cfg, TEST)
    assert len(suite.retrieval.images) == 3 and suite.zeroshot[0].classnames == ("animals", "food")
    assert len(list((tmp_path / "cache").glob("openclipart-*.pt"))) == 1
    assert len(build_train_dataset(cfg, TEST)) == 15  # served from the cache


def test_openclipart_missing_files_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="Open Clip Art files not found .*openclipart-png"):
        build_train_dataset(ClipDataConfig(kind="openclipart", path=str(tmp_path), cache_dir="none"), TEST)


@pytest.mark.skipif(not HAVE_CLIPART, reason="Debian packages openclipart-png/-svg not installed")
def test_openclipart_real_files_subset(tmp_path: Path) -> None:
    src = Path(real.OPENCLIPART_DIR)
    pngs = sorted((src / "png" / "food").rglob("*.png"))[:12] + sorted((src / "png" / "animals").rglob("*.png"))[:12]
    for p in pngs:
        rel = p.relative_to(src / "png")
        for kind, path in (("png", p), ("svg", (src / "svg" / rel).with_suffix(".svg"))):
            (tmp_path / kind / rel.parent).mkdir(parents=True, exist_ok=True)
            if path.is_file():
                shutil.copy(path, tmp_path / kind / rel.with_suffix(path.suffix))
    cfg = ClipDataConfig(kind="openclipart", path=str(tmp_path), eval_samples=4, cache_dir="none")
    ds = build_train_dataset(cfg, TEST)
    assert len(ds) == 20 and all(c[0] for c in ds.captions)
    assert len(build_eval_suite(cfg, TEST).retrieval.images) == 4
