"""Convert Fashion-MNIST (Debian `dataset-fashion-mnist`) to clip_benchmark's wds layout, for `compt eval --benchmark`.

    python benchmarks/fashion_mnist_wds.py OUT_ROOT [--train N] [--source DIR]

writes ``OUT_ROOT/fashion_mnist/`` (the folder `compt eval --benchmark wds/fashion_mnist --dataset-root OUT_ROOT`
reads): the whole 10,000-image test split as 28×28 grey PNGs with ``.cls`` labels, ``classnames.txt`` and
``zeroshot_classification_templates.txt`` — the class names and prompt templates compt's own Fashion-MNIST data
kind trains and evaluates with (``{}`` written as clip_benchmark's ``{c}``) — and, with ``--train N``, the first
N training images as the ``train`` split (for clip_benchmark's own ``--task linear_probe``, which needs CUDA).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from PIL import Image

from compt.clip.bench.wds import write_classification
from compt.clip.data.real import FASHION_CLASSES, FASHION_DIR, FASHION_TEMPLATES, read_fashion_mnist


def convert(out_root: Path, source: str, train: int) -> Path:
    folder = out_root / "fashion_mnist"
    templates = [t.replace("{}", "{c}") for t in FASHION_TEMPLATES]
    for split, raw, count in (("test", "t10k", None), ("train", "train", train)):
        if count == 0:
            continue
        images, labels = read_fashion_mnist(source, raw)
        images, labels = images[:count], labels[:count]
        write_classification(folder, split, [Image.fromarray(a, "L") for a in images], labels.tolist(),
                             FASHION_CLASSES, templates)
        print(f"{split}: {len(labels)} images")
    return folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_root", type=Path)
    p.add_argument("--train", type=int, default=0, help="training images for a linear probe (default 0: none)")
    p.add_argument("--source", default=FASHION_DIR, help=f"folder with the IDX files (default {FASHION_DIR})")
    args = p.parse_args()
    t0 = time.perf_counter()
    folder = convert(args.out_root, args.source, args.train)
    print(f"wrote {folder} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
