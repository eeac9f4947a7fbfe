"""Self-describing, atomically written checkpoints — the one place compt reads and writes weights.

A compt checkpoint is a plain dict (loads with ``torch.load(..., weights_only=True)``), one format for every
paradigm (`compt.paradigm`)::

    {"format": "compt-checkpoint/1",
     "paradigm": "clip" | "lm" | …,                 # whose model config this is (absent in older files: clip)
     "state_dict": {the model's own keys: tensors}, # open_clip's for CLIP: open_clip.create_model(pretrained=PATH)
     "model_config": the paradigm's config as a dict,
     …the paradigm's extra keys (CLIP: "open_clip_config" {"embed_dim", "vision_cfg", "text_cfg"}),
     "lineage": {...},                              # parent path + sha256, growth operator, stage, seed …
     "train_state": {...} | absent}                 # optimizer, scheduler, step, epoch, RNG, loader position

Plain open_clip checkpoints (a bare state dict, with or without ``module.`` prefixes, or a training dict
with ``state_dict``) are read too; they simply carry no config or lineage. Language-model checkpoints of
earlier compt versions (``"format": "compt-lm-checkpoint/1"`` with an ``lm_config``) read as paradigm ``lm``.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch

from compt.errors import UserError, os_error_message
from compt.paradigm import paradigm_named, paradigm_of_config

FORMAT = "compt-checkpoint/1"
OLD_LM_FORMAT = "compt-lm-checkpoint/1"   # language-model checkpoints of earlier versions (read, never written)


@dataclass
class Checkpoint:
    """What was read from a checkpoint file: `model_config` is the `paradigm`'s config (None for plain
    open_clip files, which are paradigm ``clip``)."""

    state_dict: dict[str, torch.Tensor]
    model_config: Any = None
    lineage: dict[str, Any] = field(default_factory=dict)
    train_state: dict[str, Any] | None = None
    path: str = ""
    paradigm: str = "clip"


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """The one atomic writer: `write(f)` into a temp file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException as e:
        # judged while the partial file still takes its space: after the unlink a full disk may look roomy
        error = write_error(path, e) if isinstance(e, (OSError, RuntimeError)) else None  # torch: RuntimeError
        Path(tmp).unlink(missing_ok=True)
        if error is not None:
            raise error from e
        raise
    return path


def atomic_save(obj: Any, path: str | Path) -> Path:
    """`torch.save` of `obj` to `path`, atomically."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Indented JSON of `obj` (non-JSON values as str) to `path`, atomically."""
    text = json.dumps(obj, indent=2, default=str)
    return atomic_write(path, lambda f: f.write(text.encode()))


def write_error(path: Path, e: BaseException) -> UserError:
    """One line for a failed write: the OS reason, or (torch's RuntimeError) whether the disk is full."""
    if isinstance(e, OSError):
        return UserError(f"cannot write {path}: {os_error_message(e)}")
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = -1
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
    full = 0 <= free < 1 << 20 or any(t in str(e).lower() for t in ("no space left", "file write failed"))
    why = "no space left on device" if full else "the write failed"
    return UserError(f"cannot write {path}: {why} ({first}); nothing was lost — free some space and rerun "
                     f"the same command to resume")


def file_digest(path: str | Path) -> dict[str, Any]:
    """Size and sha256 of a file, recorded when it is written and checked before it is trusted."""
    return {"size": Path(path).stat().st_size, "sha256": sha256_file(path)}


def verify_digest(path: str | Path, digest: dict[str, Any] | None) -> str:
    """"" when `path` matches `digest` (or no digest was recorded), else what is wrong with it."""
    path = Path(path)
    if not digest:
        return ""
    if not path.is_file():
        return f"{path} is missing"
    size = path.stat().st_size
    if size != digest.get("size"):
        return f"{path} has {size} bytes, {digest.get('size')} were written (truncated or replaced)"
    if sha256_file(path) != digest.get("sha256"):
        return f"{path} does not match the sha256 recorded when it was written (corrupt or replaced)"
    return ""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_checkpoint(path: str | Path, *, state_dict: dict[str, torch.Tensor], model_config: Any,
                    lineage: dict[str, Any] | None = None, train_state: dict[str, Any] | None = None) -> Path:
    """Write a self-describing checkpoint atomically (tensors are detached, contiguous, on CPU); the
    paradigm is the one whose config `model_config` is."""
    p = paradigm_of_config(model_config)
    payload: dict[str, Any] = {
        "format": FORMAT,
        "paradigm": p.name,
        "state_dict": {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()},
        "model_config": p.config_to_dict(model_config),
        **p.checkpoint_extras(model_config),
        "lineage": dict(lineage or {}),
    }
    if train_state is not None:
        payload["train_state"] = train_state
    return atomic_save(payload, path)


def strip_prefix(state_dict: dict[str, torch.Tensor], prefixes: tuple[str, ...] = ("module.", "_orig_mod.")
                 ) -> dict[str, torch.Tensor]:
    """Remove DDP / torch.compile wrapper prefixes from every key."""
    out = {}
    for k, v in state_dict.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    return out


def load_strict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor] | None, name: str) -> torch.nn.Module:
    """Load `state_dict` (if any) into `model` strictly; a mismatch is a one-line `UserError` naming `name`."""
    if state_dict is not None:
        try:
            model.load_state_dict(state_dict, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            raise UserError(f"weights do not fit model {name}: {' '.join(first[:3])[:400]}") from e
    return model


def load_checkpoint(path: str | Path, *, mmap: bool = False) -> Checkpoint:
    """Read a compt or plain open_clip checkpoint; corrupt, truncated or foreign files raise `UserError`.

    `mmap`: map the file's tensors instead of reading them into this process's memory (``torch.load(mmap=True)``,
    copy-on-write: writing to a loaded tensor never changes the file); only for files compt wrote (zip format).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        blocked = re.search(r"unsupported global:? (?:GLOBAL )?([\w.]+)", str(e), re.IGNORECASE)
        if blocked:  # a readable pickle that names code to run: refused, not damaged
            raise UserError(f"refusing to load {path}: it would run or build {blocked.group(1)}, which safe "
                            f"loading (weights_only=True) blocks — not a plain tensor checkpoint; only load files "
                            f"you trust, and convert them to a state dict first") from e
        raise _unreadable(path, e) from e
    except Exception as e:  # torch raises several types for truncated zip / pickle data
        raise _unreadable(path, e) from e
    return _interpret(raw, str(path))


def _unreadable(path: Path, e: Exception) -> UserError:
    return UserError(f"cannot read checkpoint {path}: corrupt or truncated ({type(e).__name__}: "
                     f"{str(e).splitlines()[0][:160] if str(e) else 'no detail'})")


def _model_config(paradigm: str, raw: Any, path: str) -> Any:
    p = paradigm_named(paradigm)
    try:
        return p.config_from_dict(raw)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{path}: its model_config is malformed ({type(e).__name__}: {e}); the file was not "
                        f"written by this compt version or was edited") from None


def _interpret(raw: Any, path: str) -> Checkpoint:
    if not isinstance(raw, dict):
        raise UserError(f"{path} is not a checkpoint (a {type(raw).__name__}, expected a dict of tensors)")
    if raw.get("format") in (FORMAT, OLD_LM_FORMAT):
        old_lm = raw["format"] == OLD_LM_FORMAT
        paradigm = "lm" if old_lm else str(raw.get("paradigm", "clip"))
        cfg = _model_config(paradigm, raw.get("lm_config" if old_lm else "model_config"), path)
        return Checkpoint(state_dict=raw["state_dict"], model_config=cfg, lineage=raw.get("lineage", {}),
                          train_state=raw.get("train_state"), path=path, paradigm=paradigm)
    sd = raw.get("state_dict", raw.get("model", raw))
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"{path} holds no state dict of tensors (keys: {', '.join(list(raw)[:6])})")
    return Checkpoint(state_dict=strip_prefix(sd), path=path)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
