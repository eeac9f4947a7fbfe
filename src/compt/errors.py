"""User-facing errors: the CLI prints these as one line and exits non-zero, without a traceback."""

from __future__ import annotations

import difflib
import errno
from collections.abc import Iterable, Sequence


class UserError(Exception):
    """A problem with what the user asked for (config, names, files), not a bug in compt."""


class Interrupted(UserError):
    """A stage stopped on request (SIGTERM/SIGINT) after writing a checkpoint: it resumes, it did not fail."""


class Stopped(BaseException):
    """A stop signal (SIGTERM/SIGINT) that arrived outside a training loop (`compt.signals`). Like
    KeyboardInterrupt it is no `Exception`, so no handler of failures (a corrupt file, an undecodable image)
    takes it for one; the CLI prints it as one line and exits 2."""


def close_names(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    """Up to `n` known names close to `name`; case-insensitive equals first, then difflib's ranking of the
    lower-cased names (so ``test/b`` suggests ``test/B`` before ``test/C``)."""
    known = sorted(known)
    exact = [k for k in known if k.lower() == name.lower()]
    lowered: dict[str, list[str]] = {}
    for k in known:
        lowered.setdefault(k.lower(), []).append(k)
    close = difflib.get_close_matches(name.lower(), list(lowered), n=n + len(exact), cutoff=0.5)
    ranked = exact + [k for c in close for k in lowered[c] if k not in exact]
    return ranked[:n]


def unknown_name(kind: str, name: str, known: Iterable[str]) -> UserError:
    """Build a `UserError` for an unknown name that suggests the closest known names."""
    known = sorted(known)
    close = close_names(name, known)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return UserError(f"unknown {kind} {name!r}{hint} (see `compt models` for the list)" if kind == "model"
                     else f"unknown {kind} {name!r}{hint} (known: {', '.join(known)})")


def one_line(message: str) -> str:
    """The user's message of an error, on one line.

    A `UserError` raised inside a DataLoader worker comes back re-raised with the worker's traceback in its
    message ("Caught UserError in DataLoader worker process 0. Original Traceback …"), possibly nested;
    the innermost ``UserError: …`` line is the message that was raised.
    """
    lines = [ln.strip() for ln in str(message).splitlines() if ln.strip()]
    inner = [ln for ln in lines if ln.startswith(("compt.errors.UserError: ", "compt.errors.Interrupted: "))]
    if inner:
        return inner[-1].split(": ", 1)[1]
    return " ".join(lines)


def os_error_message(e: OSError, flags: Sequence[str] = ()) -> str:
    """One line for an environment failure (disk full, read-only filesystem, permissions …); `flags` are the
    command's options that choose where it writes (e.g. ``--run-dir``), suggested for an unwritable folder —
    none for a command that writes inside what it reads (``compt finetune``, ``compt eval --lm-eval``)."""
    what = f"{e.filename}: " if e.filename else ""
    reason = e.strerror or str(e) or type(e).__name__
    elsewhere = f"choose a writable folder ({' / '.join(flags)})" if flags else "work on a writable copy"
    hint = {errno.ENOSPC: " — free some space (nothing was lost: rerun the same command to resume)",
            errno.EROFS: f" — {elsewhere}",
            errno.EACCES: f" — make it writable for you, or {elsewhere}"}.get(e.errno or 0, "")
    return f"{what}{reason}{hint}"
