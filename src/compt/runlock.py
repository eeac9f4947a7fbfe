"""One run per run directory: an exclusive lock file held for the life of a `train_run` call.

``RUN/.compt.lock`` is locked with ``flock`` (released by the kernel when the holder exits, even on SIGKILL; every
child the holder forks — DataLoader workers — closes its inherited copy at once, so a worker that outlives a
killed holder does not keep the lock) and holds who has it: pid, host, torchrun job and start time. A second run
on the same folder stops with a one-line `UserError` naming the holder. A lock file that still names a holder
although the lock is free was left by a process that died; it is taken over with a message. Under torchrun the
ranks of one job share the lock: rank 0 takes it and every rank learns the outcome (`distributed.all_true`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from compt import distributed
from compt.errors import UserError

LOCK_NAME = ".compt.lock"
_HELD: set[int] = set()   # lock file descriptors this process holds (closed in its forked children)


def _close_in_child() -> None:
    for fd in _HELD:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


def job_id() -> str:
    """This process's torchrun job ("" outside torchrun): ranks of one job report the same id."""
    env = os.environ
    if "TORCHELASTIC_RUN_ID" not in env and "MASTER_ADDR" not in env:
        return ""
    return f"{env.get('TORCHELASTIC_RUN_ID', '')}@{env.get('MASTER_ADDR', '')}:{env.get('MASTER_PORT', '')}"


def _holder() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "job": job_id(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": " ".join(sys.argv[:6])}


def _describe(holder: dict[str, Any]) -> str:
    job = f", torchrun job {holder['job']}" if holder.get("job") else ""
    return (f"process {holder.get('pid', '?')} on {holder.get('host', '?')}{job}, started "
            f"{holder.get('started', '?')} ({holder.get('argv', '?')})")


def _read(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 1 << 16)
    try:
        holder = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"pid": "?", "note": "unreadable lock file"}
    return holder if isinstance(holder, dict) else {}


def _write(fd: int, holder: dict[str, Any] | None) -> None:
    os.ftruncate(fd, 0)
    if holder:
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
    os.fsync(fd)


RUN_BUSY = ("run directory", "wait for that run to end or use another --run-dir")   # (what it is, what to do)


def acquire(run_dir: Path, busy: tuple[str, str] = RUN_BUSY) -> int:
    """Lock `run_dir` for this process; returns the open lock file descriptor (see `release`). `busy`: what the
    folder is and what to do, for the message when another process holds it."""
    import fcntl

    path = Path(run_dir) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = _read(fd)
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise UserError(f"{busy[0]} {run_dir} is in use by {_describe(holder)}; {busy[1]}") from None
        raise
    stale = _read(fd)
    if stale:
        print(f"compt: taking over the lock of {run_dir} left by {_describe(stale)}, which is no longer "
              f"running", file=sys.stderr)
    _write(fd, _holder())
    _HELD.add(fd)
    return fd


def release(fd: int) -> None:
    """Empty the lock file (a clean exit leaves no stale holder) and drop the lock."""
    import fcntl

    with contextlib.suppress(OSError):  # a full or read-only disk must not hide the run's own error
        _write(fd, None)
    fcntl.flock(fd, fcntl.LOCK_UN)
    _HELD.discard(fd)
    os.close(fd)


@contextlib.contextmanager
def run_lock(run_dir: str | Path, busy: tuple[str, str] = RUN_BUSY) -> Iterator[None]:
    """Hold the run directory's lock for the duration of the block (rank 0 of a torchrun job holds it); `busy` as
    in `acquire` (e.g. ``compt finetune`` locks the run's ``finetune`` folder)."""
    run_dir = Path(run_dir)
    fd, error = None, None
    if distributed.world_info_from_env()[0] == 0:
        try:
            fd = acquire(run_dir, busy)
        except Exception as e:  # in use, or the folder is not writable: every rank must hear of it
            error = e
    if not distributed.all_true(error is None):
        raise error or UserError(f"run directory {run_dir} is in use by another run or not writable (see rank "
                                 f"0's message)")
    try:
        yield
    finally:
        if fd is not None:
            release(fd)
