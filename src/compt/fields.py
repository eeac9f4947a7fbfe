"""Typed values of run-config fields: a TOML or ``key=value`` override value checked and converted against a
dataclass field's annotation (`coerce`), as every config table and command-line ``--set`` reads them."""

from __future__ import annotations

import sys
import types
import typing
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from compt.errors import UserError


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert a TOML or override value against a dataclass field type; UserError on mismatch."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            return None
        return coerce(value, args[0], where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise UserError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise UserError(f"{where}: expected a number, got {value!r}")
        try:
            num = float(value) if isinstance(value, str) else value
        except ValueError:
            raise UserError(f"{where}: expected a number, got {value!r}") from None
        if not isinstance(num, (int, float)):
            raise UserError(f"{where}: expected a number, got {value!r}")
        if tp is int:
            if float(num) != int(num):
                raise UserError(f"{where}: expected an integer, got {value!r}")
            return int(num)
        return float(num)
    if origin is tuple:  # tuple[str, ...]: a TOML list (or one string)
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        return tuple(coerce(v, typing.get_args(tp)[0], where) for v in items)
    if origin is dict:  # dict[str, float]: a TOML inline table
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a table {{key = number, …}}, got {value!r}")
        key_tp, value_tp = typing.get_args(tp)
        return {coerce(k, key_tp, where): coerce(v, value_tp, f"{where}.{k}") for k, v in value.items()}
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def parse_field(cls: type, name: str, text: str, where: str) -> Any:
    """The value of a ``name=text`` override for a field of dataclass `cls`, parsed and type-checked exactly as
    run-config overrides are (TOML scalar, else the raw text; then `coerce`)."""
    return coerce(parse_scalar(text), typing.get_type_hints(cls)[name], where)


def parse_scalar(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
