"""Adapters for the real data sets that ship inside Debian packages, and for labelled image folders.

- Fashion-MNIST (``dataset-fashion-mnist``): 28×28 grey IDX files; captions are K distinct prompt templates of
  the class name (fixed per index); zero-shot + linear probe on the test split.
- Open Clip Art (``openclipart-png`` + ``openclipart-svg``): PNG clip art; captions from the matching SVG's
  ``<dc:title>`` (raw caption), ``<dc:description>`` and keywords (long captions); retrieval on a held-out
  split, zero-shot on the top-level category folders.
- Image folders ``root/<class>/*.jpg``: zero-shot classification (and template-caption training).
"""

from __future__ import annotations

import html
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from compt.clip.data.carve import carve
from compt.clip.data.datasets import PairDataset
from compt.clip.data.images import TensorImages, cache_key, decode_all, load_cached, save_cached
from compt.clip.data.text import template_captions, tokenize
from compt.clip.settings import ClipDataConfig
from compt.errors import UserError
from compt.idx import fashion_mnist_file, read_idx

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle boot")
FASHION_TEMPLATES = ("a photo of a {}.", "a black and white photo of a {}.", "a low resolution photo of a {}.",
                     "a photo of the {}, a type of clothing.", "a grayscale picture of a {}.",
                     "a product photo of a {}.", "a {}.", "a cropped photo of a {}.")
FOLDER_TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "an image of a {}.", "a photo of the {}.",
                    "a close-up photo of a {}.", "a cropped photo of the {}.", "a {}.", "a drawing of a {}.")
OPENCLIPART_DIR = "/usr/share/openclipart"
OPENCLIPART_TEMPLATES = ("clip art of {}.", "an illustration related to {}.", "an icon about {}.",
                         "a drawing from the {} category.")
OPENCLIPART_SKIP_CATEGORIES = ("unsorted", "special", "buttons", "logos", "containers")  # vague or < 20 images
_GENERIC_KEYWORDS = {"unsorted", "clip art", "clipart", "media", "public domain", "svg", "image", "png", ""}


@dataclass(frozen=True)
class Labelled:
    """Pre-decoded labelled images of one split."""

    images: torch.Tensor          # uint8 (N, 3, H, W)
    labels: torch.Tensor          # (N,) long
    classnames: tuple[str, ...]
    templates: tuple[str, ...]


def subset(n: int, k: int, seed: int, stream: int) -> np.ndarray:
    """First k of a seeded permutation of range(n) (k ≥ n keeps all, permuted)."""
    return np.random.default_rng([seed, stream]).permutation(n)[: min(k, n)]


def template_pairs(split: Labelled, k: int, context_length: int, seed: int, name: str) -> PairDataset:
    """Train pairs whose K caption slots are distinct prompt templates of the class name (fixed per index)."""
    names = [split.classnames[int(y)] for y in split.labels]
    captions = [template_captions(c, split.templates, k, seed=seed, index=i) for i, c in enumerate(names)]
    flat = tokenize([c for caps in captions for c in caps], context_length)
    tokens = flat.view(len(names), k, context_length).to(torch.int32)
    return PairDataset(TensorImages(split.images), tokens=tokens, captions=[tuple(c) for c in captions], k=k,
                       context_length=context_length, seed=seed, name=name)


# ----------------------------------------------------------------------------------------------- Fashion-MNIST
def _grey_to_model(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (N, h, w) grey → uint8 (N, 3, size, size) with open_clip's resize + center crop."""
    import torchvision.transforms as T
    from PIL import Image

    tf = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC, antialias=True), T.CenterCrop(size)])
    out = np.stack([np.asarray(tf(Image.fromarray(a))) for a in images]) if len(images) else \
        np.zeros((0, size, size), np.uint8)
    return torch.from_numpy(out).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


def read_fashion_mnist(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Raw split "train" or "t10k": uint8 images (N, 28, 28) and labels (N,) from the IDX files in `root`."""
    root = Path(root)
    return (read_idx(fashion_mnist_file(root, f"{split}-images-idx3-ubyte")),
            read_idx(fashion_mnist_file(root, f"{split}-labels-idx1-ubyte")))


def fashion_mnist(data: ClipDataConfig, size: int, split: str, count: int, stream: int,
                  part: str | None = None) -> Labelled:
    """`count` seeded images of the "train" or "t10k" split at the model's size; `part` "train" / "validation":
    only those outside / inside the validation split carved from them (keys: indices in the split's file)."""
    images, labels = read_fashion_mnist(data.path or FASHION_DIR, split)
    pick = subset(len(images), count, data.seed, stream)
    if part is not None:
        val = carve([str(i) for i in pick], data, "fashion-mnist")
        pick = pick[val] if part == "validation" else np.delete(pick, val)
    return Labelled(_grey_to_model(images[pick], size), torch.from_numpy(labels[pick].astype(np.int64)),
                    FASHION_CLASSES, FASHION_TEMPLATES)


# ----------------------------------------------------------------------------------------------- Open Clip Art
def _first(pattern: str, text: str) -> str:
    m = re.search(pattern, text, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", m.group(1))).strip() if m else ""


def svg_captions(svg: str | Path, fallback: str) -> tuple[str, ...]:
    """(raw caption, long captions…) from an SVG's Dublin Core metadata; the title falls back to `fallback`."""
    try:
        text = Path(svg).read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    work = _first(r"<cc:Work[^>]*>(.*?)</cc:Work>", text) or text
    title = _first(r"<dc:title[^>]*>(.*?)</dc:title>", work) or fallback
    desc = _first(r"<dc:description[^>]*>(.*?)</dc:description>", work)
    subject = _first(r"<dc:subject[^>]*>(.*?)</dc:subject>", work)
    keywords = [html.unescape(k).strip() for k in re.findall(r"<rdf:li[^>]*>(.*?)</rdf:li>", subject, flags=re.S)]
    keywords = [k for k in keywords if k.lower() not in _GENERIC_KEYWORDS and "<" not in k]
    long = [desc] if desc else []
    long.append(f"clip art of {title}.")
    if keywords:
        long.append(f"keywords: {', '.join(keywords[:12])}.")
    return (title, *long)


def _openclipart_files(root: Path) -> list[Path]:
    png = root / "png"
    if not png.is_dir():
        raise UserError(f"Open Clip Art files not found under {root}; install Debian packages openclipart-png "
                        f"and openclipart-svg or set data.path to the folder holding png/ and svg/")
    return sorted(png.rglob("*.png"))


def _cache_path(data: ClipDataConfig, key: str) -> Path | None:
    if data.cache_dir == "none":
        return None
    base = data.cache_dir or os.environ.get("COMPT_CACHE_DIR") or str(Path.home() / ".cache" / "compt")
    return Path(base) / f"{key}.pt"


def openclipart(data: ClipDataConfig, size: int) -> dict:
    """Every Open Clip Art image decoded at `size`, with captions and category: cached after the first build."""
    root = Path(data.path or OPENCLIPART_DIR)
    files = _openclipart_files(root)
    stats = [(str(f.relative_to(root)), f.stat().st_size) for f in files]
    path = _cache_path(data, "openclipart-" + cache_key(stats, size, "v1"))
    cached = load_cached(path)
    if cached is not None:
        return cached
    rel = [f.relative_to(root / "png") for f in files]
    captions = [svg_captions(root / "svg" / r.with_suffix(".svg"), re.sub(r"[_\d]+", " ", r.stem).strip())
                for r in rel]
    workers = data.workers or min(4, os.cpu_count() or 1)
    images, errors = decode_all([str(f) for f in files], size, workers=workers)
    payload = {"images": images, "captions": captions, "category": [r.parts[0] for r in rel],
               "paths": [str(f) for f in files], "errors": errors}
    save_cached(path, payload)
    return payload
