"""Real image–text formats → `Record`s: open_clip-style CSV/TSV, webdataset tar shards, image folders.

Multi-caption records (captions[0] is the raw caption, the rest feed the caption-slot sampler):
- CSV: several rows with the same image path are merged in file order; with ``data.caption_separator`` set,
  one caption field is also split on it;
- shards: a ``.txt`` holds one caption per line (or separator-split); a ``.json`` may add a ``"caption"``
  string and/or a ``"captions"`` list;
- folders: ``root/<class>/*.jpg``, captions made from the class name and prompt templates.
"""

from __future__ import annotations

import csv
import json
import os
import re
import tarfile
from pathlib import Path

from compt.clip.data.datasets import BadData, Record
from compt.clip.data.images import IMAGE_EXTENSIONS, TarMember
from compt.clip.settings import ClipDataConfig
from compt.errors import UserError

_BRACE = re.compile(r"\{([^{}]*)\}")


def expand_braces(pattern: str) -> list[str]:
    """``shards/{000..003}.tar`` → 4 paths; ``{a,b}`` alternatives too (webdataset/braceexpand syntax)."""
    m = _BRACE.search(pattern)
    if m is None:
        return [pattern]
    body, head, tail = m.group(1), pattern[: m.start()], pattern[m.end():]
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        lo, hi = rng.group(1), rng.group(2)
        width = len(lo) if lo.startswith("0") else 0
        items = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    else:
        items = body.split(",")
    return [p for item in items for p in expand_braces(head + item + tail)]


def _split(text: str, separator: str) -> list[str]:
    return text.split(separator) if separator else [text]


def _separator(raw: str) -> str:
    return {"\\t": "\t", "tab": "\t", "\\n": "\n"}.get(raw, raw)


# ----------------------------------------------------------------------------------------------- CSV
def read_csv(path: str, data: ClipDataConfig, bad: BadData | None = None) -> list[Record]:
    """open_clip-style CSV/TSV (``filepath,caption``; column names and separator from `data`) → records.

    Relative image paths resolve against ``data.root`` when set, else the CSV's folder. A row whose caption
    is not valid UTF-8 is skipped and counted in `bad` (the file is read with ``surrogateescape``, so one
    bad byte costs one row, not the run).
    """
    file = Path(path)
    if not file.is_file():
        raise UserError(f"CSV file not found: {file}")
    root = Path(data.root) if data.root else file.parent
    sep = _separator(data.csv_separator)
    with open(file, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        reader = csv.DictReader(f, delimiter=sep)
        columns = reader.fieldnames or []
        missing = [c for c in (data.csv_img_key, data.csv_caption_key) if c not in columns]
        if missing:
            raise UserError(f"{file}: no column {', '.join(repr(m) for m in missing)} (columns found: "
                            f"{', '.join(repr(c) for c in columns) or 'none'}); set data.csv_img_key / "
                            f"data.csv_caption_key or data.csv_separator (now {sep!r})")
        grouped: dict[str, list[str]] = {}
        keys: dict[str, str] = {}   # resolved path → the filepath as first written (the sample's key)
        for row in reader:
            image = (row.get(data.csv_img_key) or "").strip()
            target = "" if not image else image if os.path.isabs(image) else str(root / image)
            keys.setdefault(target, image)
            caption = row.get(data.csv_caption_key) or ""
            if not _is_utf8(caption):
                if bad is not None:
                    bad.add(f"{file}:{reader.line_num}", "caption is not valid UTF-8")
                continue
            grouped.setdefault(target, []).extend(_split(caption, data.caption_separator))
    return [Record(image, tuple(caps), keys[image]) for image, caps in grouped.items()]


def _is_utf8(text: str) -> bool:
    """False when reading with ``surrogateescape`` had to escape undecodable bytes in `text`."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ----------------------------------------------------------------------------------------------- shards
def _json_captions(raw: bytes) -> list[str]:
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return []
    if not isinstance(meta, dict):
        return []
    caps = [meta["caption"]] if isinstance(meta.get("caption"), str) else []
    extra = meta.get("captions")
    if isinstance(extra, list):
        caps.extend(c for c in extra if isinstance(c, str))
    return caps


_TEXT_EXTS = ("txt", "json")
_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


def _scan_shard(shard: str, bad: BadData) -> dict[str, dict[str, tarfile.TarInfo | bytes]]:
    """key → {extension: image TarInfo | text bytes}, in one pass over the shard (webdataset keys: the member
    name up to the first dot of its basename). A truncated/corrupt shard keeps what was read and is counted."""
    samples: dict[str, dict[str, tarfile.TarInfo | bytes]] = {}
    try:
        with tarfile.open(shard, "r") as tar:
            for info in tar:
                base = os.path.basename(info.name)
                if not info.isfile() or "." not in base:
                    continue
                stem, ext = base.split(".", 1)
                ext = ext.lower()
                entry = samples.setdefault(os.path.join(os.path.dirname(info.name), stem), {})
                if ext in _TEXT_EXTS:
                    f = tar.extractfile(info)
                    entry[ext] = f.read() if f is not None else b""
                elif ext in _IMAGE_EXTS:
                    entry[ext] = info
    except (tarfile.TarError, OSError, EOFError) as e:
        bad.add(shard, f"truncated or corrupt shard ({type(e).__name__}: {e})")
    return samples


def _shard_records(shard: str, data: ClipDataConfig, bad: BadData) -> list[Record]:
    out = []
    for key, parts in _scan_shard(shard, bad).items():
        image = next((parts[e] for e in _IMAGE_EXTS if e in parts), None)
        if not isinstance(image, tarfile.TarInfo):
            bad.add(f"{shard}:{key}", "no image in sample")
            continue
        captions: list[str] = []
        txt = parts.get("txt")
        if isinstance(txt, bytes):
            text = txt.decode("utf-8", errors="replace")
            lines = [ln for ln in text.splitlines() if ln.strip()] or [text]
            captions.extend(c for ln in lines for c in _split(ln, data.caption_separator))
        if isinstance(parts.get("json"), bytes):
            captions.extend(_json_captions(parts["json"]))  # type: ignore[arg-type]
        out.append(Record(TarMember(shard, image.offset_data, image.size, image.name), tuple(captions), key))
    return out


def read_shards(pattern: str, data: ClipDataConfig, bad: BadData) -> list[Record]:
    """webdataset tar shards (brace pattern) → records (jpg/png + txt and/or json per key)."""
    shards = expand_braces(pattern)
    missing = [s for s in shards if not os.path.isfile(s)]
    if len(missing) == len(shards):
        raise UserError(f"no shard found for {pattern!r} (first: {shards[0]})")
    for s in missing:
        bad.add(s, "missing shard")
    return [r for s in shards if s not in missing for r in _shard_records(s, data, bad)]


# ----------------------------------------------------------------------------------------------- folders
def classname_of(folder: str) -> str:
    """Folder name → class name used in prompts (``ankle_boot`` → ``ankle boot``)."""
    return re.sub(r"[_\s]+", " ", folder).strip()


def read_folder(root: str) -> tuple[tuple[str, ...], list[tuple[str, int]]]:
    """``root/<class>/*.{jpg,png,…}`` → (class names sorted by folder, [(image path, label)])."""
    base = Path(root)
    if not base.is_dir():
        raise UserError(f"image folder not found: {base}")
    classes = sorted(d.name for d in base.iterdir() if d.is_dir())
    if not classes:
        raise UserError(f"{base}: no class sub-folders (expected {base}/<class>/*.jpg)")
    items = [(str(p), label) for label, c in enumerate(classes) for p in sorted((base / c).rglob("*"))
             if p.suffix.lower() in IMAGE_EXTENSIONS]
    if not items:
        raise UserError(f"{base}: no images ({', '.join(IMAGE_EXTENSIONS)}) in its class folders")
    return tuple(classname_of(c) for c in classes), items
