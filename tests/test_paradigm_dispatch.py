"""The core and the command line know a paradigm only through its members: no comparison against a paradigm's
name, no module-level import of a paradigm's package; a paradigm without the command line's members is refused in
one line naming the paradigm and the feature."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest

from compt.errors import UserError
from compt.paradigm import BUILTIN
from compt.paradigm_base import ParadigmBase

SRC = Path(__file__).resolve().parents[1] / "src" / "compt"
GUARDED = sorted([*(SRC / "commands").glob("*.py"), *(SRC / f for f in ("__init__.py", "chain.py", "distributed.py",
                                                                       "plan.py", "report.py"))])
NAMES = set(BUILTIN)                                        # "clip", "lm"
PACKAGES = tuple(module.rsplit(".", 1)[0] for module in BUILTIN.values())   # compt.clip, compt.lm


def _name_comparisons(tree: ast.AST) -> list[int]:
    """Lines comparing anything with a paradigm's name (``x == "lm"``, ``p.name != "clip"``, ``k in ("clip",)``) or
    looking a paradigm up by a literal name (``paradigm_named("lm")``)."""
    def named(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in NAMES
        return isinstance(node, (ast.Tuple, ast.List, ast.Set)) and any(named(e) for e in node.elts)

    return [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Compare)
            and any(named(side) for side in (n.left, *n.comparators))
            or isinstance(n, ast.Call) and ast.unparse(n.func).endswith("paradigm_named") and any(map(named, n.args))]


def _package_imports(tree: ast.Module) -> list[int]:
    """Lines importing a paradigm's package at module level (also under ``if`` / ``try``, not under TYPE_CHECKING)."""
    found, stack = [], list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, (ast.If, ast.Try)):
            stack += [*node.body, *getattr(node, "orelse", []), *getattr(node, "finalbody", []),
                      *(s for h in getattr(node, "handlers", []) for s in h.body)]
        modules = ([a.name for a in node.names] if isinstance(node, ast.Import)
                   else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        if any(m == p or m.startswith(p + ".") for m in modules for p in PACKAGES):
            found.append(node.lineno)
    return found


def problems(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    named = [f"{path.name}:{line}: compares with a paradigm's name (or looks one up by it)"
             for line in _name_comparisons(tree)]
    return named + [f"{path.name}:{line}: imports a paradigm's package at module level"
                    for line in _package_imports(tree)]


def test_the_core_and_the_commands_neither_branch_on_a_paradigm_name_nor_import_one() -> None:
    assert len(GUARDED) > 10 and all(p.is_file() for p in GUARDED)
    assert [p for f in GUARDED for p in problems(f)] == []


@pytest.mark.parametrize("code, caught", [
    ('if ckpt.paradigm != "clip":\n    pass\n', "compares with a paradigm's name"),
    ('ok = paradigm.name == "lm"\n', "compares with a paradigm's name"),
    ('ok = kind in ("lm", "x")\n', "compares with a paradigm's name"),
    ('p = paradigm_named("lm") if hf else paradigm_of(x)\n', "compares with a paradigm's name"),
    ("from compt.clip.finetune.config import FinetuneConfig\n", "imports a paradigm's package"),
    ("import compt.lm.models\n", "imports a paradigm's package"),
    ("try:\n    from compt.lm import data\nexcept ImportError:\n    pass\n", "imports a paradigm's package"),
])
def test_the_check_catches_each_kind_of_regression(tmp_path: Path, code: str, caught: str) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(code)
    assert [p for p in problems(bad) if caught in p]


def test_the_check_lets_lazy_imports_and_type_checking_imports_through(tmp_path: Path) -> None:
    ok = tmp_path / "ok.py"
    ok.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from compt.clip.models import ModelConfig\n"
                  "def f():\n    from compt.lm.cli import grow_command\n    return 'lm'\n")
    assert problems(ok) == []


class Bare(ParadigmBase):
    name, label = "bare", "bare model"


@pytest.mark.parametrize("call, feature", [
    (lambda p: p.grow_command(argparse.Namespace(), None), "compt grow"),
    (lambda p: p.prune_pair(argparse.Namespace(), None), "compt prune"),
    (lambda p: p.calibration_set(argparse.Namespace(), None, None, 1, ""), "compt prune"),
    (lambda p: p.eval_checkpoint(argparse.Namespace()), "compt eval"),
    (lambda p: p.eval_run(argparse.Namespace(), "lm_eval"), "compt eval --lm-eval"),
    (lambda p: p.finetune("run"), "compt finetune"),
])
def test_a_paradigm_without_a_command_is_refused_in_one_line(call: object, feature: str) -> None:
    with pytest.raises(UserError, match=f"^the bare paradigm does not support {feature}$"):
        call(Bare())   # type: ignore[operator]


def test_the_defaults_offer_no_command_line_feature() -> None:
    bare = Bare()
    assert (bare.eval_data_kinds(), bare.eval_tools(), bare.finetune_defaults()) == ((), (), None)
    assert not bare.reads_native(Path("."))
    assert bare.describe_samples(None) == ""
