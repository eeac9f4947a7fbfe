"""User-facing errors: the CLI prints these as one line and exits non-zero, without a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A problem with what the user asked for (config, names, files), not a bug in compt."""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> UserError:
    """Build a `UserError` for an unknown name that suggests the closest known names."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return UserError(f"unknown {kind} {name!r}{hint} (see `compt models` for the list)" if kind == "model"
                     else f"unknown {kind} {name!r}{hint} (known: {', '.join(known)})")
