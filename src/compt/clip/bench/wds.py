"""Write small datasets in clip_benchmark's ``wds`` layout (what its ``wds/<name>`` builder reads)::

    FOLDER/classnames.txt                          one class name per line (classification)
    FOLDER/zeroshot_classification_templates.txt   one prompt per line, ``{c}`` where the class name goes
    FOLDER/dataset_type.txt                        "retrieval" for image–caption sets
    FOLDER/<split>/nshards.txt                     "1"
    FOLDER/<split>/0.tar                           s0000000.png + s0000000.cls (label) | .txt (captions, one a line)

One uncompressed shard, PNG images, written with `tarfile` in sample order (deterministic bytes).
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from PIL import Image


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="png")
    return buf.getvalue()


def _write_shard(folder: Path, split: str, samples: Iterable[tuple[Image.Image, str, bytes]]) -> int:
    """Write ``(image, label extension, label bytes)`` samples to FOLDER/split/0.tar; returns the count."""
    out = folder / split
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    with tarfile.open(out / "0.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
        for n, (image, ext, payload) in enumerate(samples, start=1):
            for suffix, data in (("png", _png(image)), (ext, payload)):
                info = tarfile.TarInfo(f"s{n - 1:07d}.{suffix}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
    (out / "nshards.txt").write_text("1\n")
    return n


def write_classification(folder: str | Path, split: str, images: Sequence[Image.Image], labels: Sequence[int],
                         classnames: Sequence[str], templates: Sequence[str]) -> Path:
    """A zero-shot classification / linear-probe split; `templates` use clip_benchmark's ``{c}``."""
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if not all("{c}" in t for t in templates):
        raise ValueError("clip_benchmark templates need a '{c}' placeholder")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "classnames.txt").write_text("".join(f"{c}\n" for c in classnames))
    (folder / "zeroshot_classification_templates.txt").write_text("".join(f"{t}\n" for t in templates))
    _write_shard(folder, split, ((im, "cls", str(int(y)).encode()) for im, y in zip(images, labels)))
    return folder


def write_retrieval(folder: str | Path, split: str, images: Sequence[Image.Image],
                    captions: Sequence[Sequence[str]]) -> Path:
    """An image–text retrieval split: each image with one or more captions (no newlines inside a caption)."""
    if len(images) != len(captions) or not all(captions):
        raise ValueError("one non-empty caption list per image is required")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset_type.txt").write_text("retrieval\n")
    _write_shard(folder, split, ((im, "txt", "\n".join(c).encode()) for im, c in zip(images, captions)))
    return folder
