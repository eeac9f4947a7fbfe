"""IDX files (the MNIST / Fashion-MNIST format), read for every paradigm that trains or evaluates on them.

An IDX file is: two zero bytes, a type byte (0x08: unsigned bytes), the number of dimensions d, then d big-endian
uint32 sizes, then the values in C order; Fashion-MNIST ships them gzipped.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from compt.errors import UserError


def fashion_mnist_file(root: Path, stem: str) -> Path:
    """``root/stem.gz`` or ``root/stem``; a one-line `UserError` naming what is missing."""
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise UserError(f"Fashion-MNIST files not found under {root} ({stem}[.gz] not found); install Debian package "
                    f"dataset-fashion-mnist or set data.path to the folder holding the IDX files")


def read_idx(path: Path) -> np.ndarray:
    """IDX file (gzip or plain) → uint8 array (N, …), read-only (it views the file's bytes)."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)
