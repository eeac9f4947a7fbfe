"""benchmarks/mutate.py's mutant generator on a toy source (the mutation runs themselves are a separate command)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import mutate  # noqa: E402

TOY = '''"""Docstring: 1 < 2 is never mutated."""


def f(x: int, flag: bool = True) -> int:
    """Neither is this one."""
    assert x >= 0, "guards are left alone"
    total = x + 1
    if total < 10 and flag:
        total *= 2
    print(f"{x + 1}")
    return max(total, 0)
'''


def _mutants() -> list[mutate.Mutant]:
    return mutate.enumerate_mutants(TOY, "toy.py")


def test_every_mutant_changes_one_expression_and_compiles() -> None:
    ms = _mutants()
    got = {(m.line, m.operator) for m in ms}
    assert {(7, "Add -> Sub"), (7, "1 -> 2"), (7, "1 -> 0"), (8, "Lt -> LtE"), (8, "10 -> 11"), (8, "And -> Or"),
            (8, "negate condition"), (9, "drop augmented assignment"), (10, "drop call"), (11, "max -> min"),
            (11, "return None"), (4, "True -> False")} <= got
    assert not {line for line, _ in got} & {1, 5, 6}              # docstrings and asserts untouched
    assert not any(line == 10 and op != "drop call" for line, op in got)   # nothing inside the f-string
    for m in ms:
        new = m.apply(TOY)
        ast.parse(new)
        changed = [i for i, (a, b) in enumerate(zip(TOY.splitlines(), new.splitlines(), strict=True)) if a != b]
        assert changed == [m.line - 1], m


def test_a_mutant_reads_as_a_one_line_diff_and_matches_its_judgement() -> None:
    m = next(m for m in _mutants() if m.operator == "Lt -> LtE")
    assert m.lines(TOY) == ("if total < 10 and flag:", "if (total <= 10) and flag:")
    assert m.diff(TOY).splitlines()[1:] == ["-    if total < 10 and flag:", "+    if (total <= 10) and flag:"]
    entry = {"module": "toy.py", "line": "if total < 10 and flag:", "mutant": "if (total <= 10) and flag:",
             "status": "equivalent", "reason": "r"}
    assert mutate.judged(m, TOY, [entry]) == entry
    assert mutate.judged(m, TOY, [{**entry, "module": "other.py"}]) is None


def test_the_kill_rate_leaves_out_equivalent_survivors_only() -> None:
    ms = _mutants()[:5]
    outcomes = [mutate.Outcome(ms[0], "killed", 1.0), mutate.Outcome(ms[1], "timeout", 1.0),
                mutate.Outcome(ms[2], "survived", 1.0, judgement={"status": "equivalent", "reason": "r"}),
                mutate.Outcome(ms[3], "survived", 1.0, judgement={"status": "accepted", "reason": "r"}),
                mutate.Outcome(ms[4], "survived", 1.0)]
    mutate.TARGETS["toy.py"] = ("tests/test_mutate.py",)
    try:
        row = mutate.summary_of("toy.py", 20, outcomes, 1.0)
    finally:
        del mutate.TARGETS["toy.py"]
    assert (row["killed"], row["timeout"], row["survived"], row["equivalent"], row["accepted"]) == (1, 1, 3, 1, 1)
    assert row["kill_rate"] == 2 / 4 and len(row["survivors"]) == 3


def test_every_target_module_and_test_file_exists() -> None:
    root = Path(__file__).resolve().parents[1]
    for module, tests in mutate.TARGETS.items():
        assert (root / "src" / module).is_file(), module
        assert all((root / t.split("::")[0]).is_file() for t in tests), module
    assert mutate.load_equivalent() is not None


def test_a_rerun_of_the_survivors_keeps_the_earlier_kills() -> None:
    old = {"module": "m.py", "candidates": 50, "sampled": 20, "baseline_s": 3.0, "killed": 15, "timeout": 1,
           "survivors": []}
    rerun = {"module": "m.py", "candidates": 50, "sampled": 4, "baseline_s": 2.0, "killed": 2, "timeout": 0,
             "survived": 2, "equivalent": 1, "accepted": 0, "survivors": [{}, {}]}
    row = mutate.rescored(old, rerun)
    assert (row["sampled"], row["killed"], row["timeout"], row["survived"]) == (20, 17, 1, 2)
    assert row["kill_rate"] == 18 / 19
    assert mutate._diff_lines("@@ -3 +3 @@\n-    a = 1\n+    a = 2") == ("a = 1", "a = 2")
