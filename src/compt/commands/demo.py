"""`compt demo` (not yet available)."""

from __future__ import annotations

import argparse

from compt.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="(not yet available)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise UserError("`compt demo` is not yet available")
