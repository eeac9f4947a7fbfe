"""A cheap fingerprint of the files a run's data comes from, so that a resumed stage notices changed data.

For each source file: its path relative to the data's root, its size, and — for the files that hold captions or
text and are small enough to read at once (≤ `HASHED_BYTES`) — the sha256 of its content; image files and
shards count by name and size only. `data_changes` lists what differs, one line each.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

HASHED_BYTES = 64 << 20   # caption CSVs and text corpora up to 64 MiB are hashed whole


def files_fingerprint(files: Iterable[Path], root: Path | None = None, hashed: tuple[str, ...] = ()) -> dict[str, Any]:
    """{relative name: [size, sha256 or ""]} of `files`; content is hashed for names ending in `hashed`."""
    out = {}
    for f in sorted(Path(p) for p in files):
        size = f.stat().st_size
        digest = ""
        if f.name.endswith(hashed) and size <= HASHED_BYTES:
            digest = hashlib.sha256(f.read_bytes()).hexdigest()
        out[str(f.relative_to(root)) if root and f.is_relative_to(root) else str(f)] = [size, digest]
    return out


def data_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints: files added, removed, resized or edited."""
    out = [f"{name} is new" for name in sorted(set(new) - set(old))]
    out += [f"{name} is gone" for name in sorted(set(old) - set(new))]
    for name in sorted(set(old) & set(new)):
        (size_a, hash_a), (size_b, hash_b) = old[name], new[name]
        if size_a != size_b:
            out.append(f"{name} changed size ({size_a} -> {size_b} bytes)")
        elif hash_a != hash_b:
            out.append(f"{name} was edited")
    return out
