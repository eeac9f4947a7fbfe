"""Mutation testing of the modules whose numbers users read: does the test suite notice a plausible bug?

    python benchmarks/mutate.py                                # every module of TARGETS, 20 sampled mutants each
    python benchmarks/mutate.py --module compt/plan.py --sample 0    # every mutant of one module
    python benchmarks/mutate.py --list                         # the mutants, without running anything

A *mutant* is the source with one small change a programmer could plausibly make (`MUTATORS`): a comparison
flipped at its boundary or negated (``<`` → ``<=``, ``==`` → ``!=``), an arithmetic operator swapped (``+`` ↔ ``-``,
``*`` ↔ ``/``, ``//`` → ``/``, ``**`` → ``*``), ``and`` ↔ ``or``, a ``not`` or a unary minus dropped, an integer
off by one, a float doubled, ``True`` ↔ ``False``, ``min`` ↔ ``max`` (and ``ceil`` ↔ ``floor``, ``any`` ↔ ``all``),
an ``if`` / ``while`` / ternary condition negated, a returned value replaced by ``None``, a call statement or an
augmented assignment dropped. Strings, docstrings, annotations, ``assert`` statements (shape guards, not
behaviour) and expressions inside f-strings (their positions are not exact before Python 3.12) are left alone.
Each mutant changes one expression's source text in place; the rest of the file stays byte-identical.

Each mutant runs in a copy of ``src/compt`` in a temporary folder (the tracked sources are never edited), with
``PYTHONPATH`` pointing there: ``pytest -x -q -p no:cacheprovider`` on the test files that cover the module
(`TARGETS`, most specific first), one mutant at a time, one torch thread. A failing run *kills* the mutant; a run
past the timeout counts as killed too (reported apart). A *survivor* is a missing test, or an equivalent mutant
(the same behaviour by construction) — `benchmarks/mutation_equivalent.toml` lists those with a reason, matched
by module and by the original and mutated source line, and the kill rate is computed over the others:

    kill rate = (killed + timed out) / (sampled − equivalent)

Mutants are enumerated in source order and sampled with `--seed` (`--sample 0`: all). Results go to
``benchmarks/results/mutation.{json,md}`` (per module: candidates, sampled, killed, timed out, survivors with
their location and diff).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
EQUIVALENT = ROOT / "benchmarks" / "mutation_equivalent.toml"

_GROWTH = ("tests/test_guards_growth.py", "tests/test_growth_split.py", "tests/test_growth.py")
_NUMBERS = ("tests/test_guards_numbers.py",)
# module (under src/) → the test files that cover it, most specific (and fastest to fail) first
TARGETS: dict[str, tuple[str, ...]] = {
    "compt/clip/growth/preserve.py": _GROWTH,
    "compt/clip/growth/split.py": _GROWTH,
    "compt/clip/growth/width.py": _GROWTH,
    "compt/clip/growth/common.py": _GROWTH,
    "compt/clip/growth/corner.py": ("tests/test_growth.py", "tests/test_inherit.py"),
    "compt/lm/growth.py": ("tests/test_guards_growth.py", "tests/test_lm.py", "tests/test_inherit.py"),
    "compt/train/stopping.py": (*_NUMBERS, "tests/test_stopping.py"),
    "compt/plan.py": (*_NUMBERS, "tests/test_plan.py", "tests/test_init.py"),
    "compt/report.py": (*_NUMBERS, "tests/test_wall_conditions.py", "tests/test_stopping.py", "tests/test_paradigm.py",
                          "tests/test_plots.py"),
    "compt/runs.py": (*_NUMBERS, "tests/test_wall_conditions.py", "tests/test_stopping.py", "tests/test_paradigm.py",
                        "tests/test_plots.py"),
    "compt/clip/losses.py": ("tests/test_losses.py", "tests/test_guards_io.py", "tests/test_tasks.py"),
    "compt/lm/losses.py": ("tests/test_guards_io.py", "tests/test_lm.py"),
    "compt/datafp.py": ("tests/test_data_fingerprint.py", "tests/test_guards_io.py"),
    "compt/clip/teacher_cache.py": ("tests/test_guards_io.py", "tests/test_teacher_cache_dir.py", "tests/test_tasks.py",
                                    "tests/test_loader.py"),
    "compt/checkpoint.py": ("tests/test_guards_io.py", "tests/test_old_runs.py", "tests/test_init.py",
                            *(f"tests/test_hardening_files.py::test_{name}" for name in (
                                "disk_full_while_saving_is_one_line_and_leaves_no_temp_file",
                                "a_full_disk_is_named_even_when_the_failed_file_freed_its_space",
                                "disk_full_on_a_json_write_is_one_line_and_leaves_no_temp_file",
                                "malformed_model_config_and_blocked_pickle_are_named_as_such",
                                "a_truncated_final_pt_is_detected_and_rebuilt"))),
}


# ----------------------------------------------------------------------------------------------- mutants
@dataclass(frozen=True)
class Mutant:
    module: str
    line: int           # 1-based line of the change
    col: int
    operator: str       # e.g. "Lt -> LtE", "drop call"
    start: int          # character offsets of the replaced source segment
    end: int
    replacement: str

    def apply(self, source: str) -> str:
        return source[:self.start] + self.replacement + source[self.end:]

    def lines(self, source: str) -> tuple[str, str]:
        """(original line, mutated line) of the change, stripped: what `mutation_equivalent.toml` matches."""
        before, after = source.splitlines(), self.apply(source).splitlines()
        return before[self.line - 1].strip(), after[self.line - 1].strip()   # the lines above are untouched

    def diff(self, source: str) -> str:
        out = difflib.unified_diff(source.splitlines(), self.apply(source).splitlines(), lineterm="", n=0)
        return "\n".join(x for x in out if not x.startswith(("---", "+++")))


BINOPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
          ast.Pow: ast.Mult, ast.Mod: ast.FloorDiv}
CMPOPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
          ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
_ATOM = re.compile(r"[\w.]+")
NAMES = {"min": "max", "max": "min", "any": "all", "all": "any", "ceil": "floor", "floor": "ceil"}


def _swap_op(node: ast.AST, table: dict) -> Iterator[tuple[str, ast.AST]]:
    new = _copy(node)
    if isinstance(node, ast.BinOp) and type(node.op) in table:
        new.op = table[type(node.op)]()
        yield f"{type(node.op).__name__} -> {type(new.op).__name__}", new
    elif isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in table:
                alt = _copy(node)
                alt.ops[i] = table[type(op)]()
                yield f"{type(op).__name__} -> {type(alt.ops[i]).__name__}", alt


def _copy(node: ast.AST) -> ast.AST:
    return ast.parse(ast.unparse(node), mode="eval").body


def mutate_expr(node: ast.expr) -> Iterator[tuple[str, str]]:
    """(operator, replacement source) for each mutation of one expression node."""
    if isinstance(node, ast.BinOp):
        yield from ((op, ast.unparse(n)) for op, n in _swap_op(node, BINOPS))
    elif isinstance(node, ast.Compare):
        yield from ((op, ast.unparse(n)) for op, n in _swap_op(node, CMPOPS))
    elif isinstance(node, ast.BoolOp):
        other = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        yield f"{type(node.op).__name__} -> {type(other).__name__}", ast.unparse(ast.BoolOp(other, node.values))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
        yield f"drop {type(node.op).__name__}", ast.unparse(node.operand)
    elif isinstance(node, ast.Constant) and type(node.value) in (int, float, bool):
        yield from _constant(node.value)
    elif isinstance(node, ast.Name) and node.id in NAMES:
        yield f"{node.id} -> {NAMES[node.id]}", NAMES[node.id]
    elif isinstance(node, ast.Attribute) and node.attr in NAMES and isinstance(node.value, ast.Name):
        yield f"{node.attr} -> {NAMES[node.attr]}", f"{node.value.id}.{NAMES[node.attr]}"
    elif isinstance(node, ast.IfExp):
        yield "negate ternary", ast.unparse(ast.IfExp(ast.UnaryOp(ast.Not(), node.test), node.body, node.orelse))


def _constant(value: int | float | bool) -> Iterator[tuple[str, str]]:
    if isinstance(value, bool):
        yield f"{value} -> {not value}", repr(not value)
    elif isinstance(value, int):
        yield f"{value} -> {value + 1}", repr(value + 1)
        if value:
            yield f"{value} -> {value - 1}", repr(value - 1)
    else:
        new = repr(2 * value) if value else "1.0"
        yield f"{value!r} -> {new}", new


def mutate_stmt(node: ast.stmt) -> Iterator[tuple[str, ast.AST, str]]:
    """(operator, the node whose source is replaced, replacement source) for statement-level mutations."""
    if isinstance(node, (ast.If, ast.While)):
        yield "negate condition", node.test, f"not ({ast.unparse(node.test)})"
    elif isinstance(node, ast.Return) and node.value is not None and not (
            isinstance(node.value, ast.Constant) and node.value.value is None):
        yield "return None", node.value, "None"
    elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        yield "drop call", node, "pass"
    elif isinstance(node, ast.AugAssign):
        yield "drop augmented assignment", node, "pass"


def _skipped(tree: ast.Module) -> set[int]:
    """ids of nodes never mutated: docstrings, annotations, asserts, f-strings and everything inside them."""
    skip: set[int] = set()

    def under(node: ast.AST | None) -> None:
        for n in ast.walk(node) if node is not None else ():
            skip.add(id(n))

    for node in ast.walk(tree):
        if isinstance(node, (ast.Assert, ast.JoinedStr, ast.Import, ast.ImportFrom)):
            under(node)
        elif isinstance(node, (ast.AnnAssign, ast.arg)):
            under(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            under(node.returns)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body and \
                isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant):
            under(node.body[0])
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            under(node)
    return skip


def _offsets(source: str) -> Callable[[int, int], int]:
    starts = [0]
    for line in source.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    encoded = source.splitlines(keepends=True)

    def offset(line: int, col: int) -> int:   # ast columns count UTF-8 bytes
        return starts[line - 1] + len(encoded[line - 1].encode()[:col].decode(errors="ignore"))

    return offset


def enumerate_mutants(source: str, module: str) -> list[Mutant]:
    """Every mutant of `source` (in source order), each of which compiles and changes the syntax tree."""
    tree = ast.parse(source)
    skip, offset, reference = _skipped(tree), _offsets(source), ast.dump(tree)
    found: list[Mutant] = []
    for node in ast.walk(tree):
        if id(node) in skip or not hasattr(node, "lineno"):
            continue
        if isinstance(node, ast.expr):
            edits = [(op, node, text) for op, text in mutate_expr(node)]
        elif isinstance(node, ast.stmt):
            edits = list(mutate_stmt(node))
        else:
            continue
        for op, target, text in edits:
            start = offset(target.lineno, target.col_offset)
            end = offset(target.end_lineno, target.end_col_offset)
            simple = isinstance(target, ast.stmt) or _ATOM.fullmatch(text)
            replacement = text if simple else f"({text})"          # keeps precedence wherever it lands
            m = Mutant(module, target.lineno, target.col_offset, op, start, end, replacement)
            try:
                changed = ast.dump(ast.parse(m.apply(source))) != reference
            except SyntaxError:
                continue
            if changed:
                found.append(m)
    found.sort(key=lambda m: (m.start, m.end, m.operator))
    return list({(m.start, m.end, m.replacement): m for m in found}.values())


# ----------------------------------------------------------------------------------------------- equivalents
def load_equivalent(path: Path = EQUIVALENT) -> list[dict[str, str]]:
    """Entries {module, line, mutant, status ("equivalent" | "accepted"), reason} of the committed list."""
    if not path.is_file():
        return []
    return tomllib.loads(path.read_text()).get("mutant", [])


def judged(m: Mutant, source: str, entries: list[dict[str, str]]) -> dict[str, str] | None:
    before, after = m.lines(source)
    return next((e for e in entries if e["module"] == m.module and e["line"] == before and e["mutant"] == after), None)


# ----------------------------------------------------------------------------------------------- running
@dataclass
class Outcome:
    mutant: Mutant
    status: str                      # killed | survived | timeout
    seconds: float
    diff: str = ""
    judgement: dict[str, str] = field(default_factory=dict)


def run_tests(tests: tuple[str, ...], pythonpath: Path, timeout: float) -> tuple[str, float, str]:
    """("passed" | "failed" | "timeout", seconds, last lines) of pytest on `tests` with `pythonpath` first."""
    path = os.pathsep.join(p for p in (str(pythonpath), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path,
           "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.communicate()
        return "timeout", time.perf_counter() - start, ""
    tail = "\n".join(out.strip().splitlines()[-3:])
    if proc.returncode == 5:
        raise SystemExit(f"no tests collected from {tests}:\n{tail}")
    return ("passed" if proc.returncode == 0 else "failed"), time.perf_counter() - start, tail


def run_module(module: str, mutants: list[Mutant], copy: Path, timeout: float | None,
               entries: list[dict[str, str]]) -> tuple[list[Outcome], float]:
    """Baseline run, then each mutant written into the copy (the original restored after each, always)."""
    tests, target = TARGETS[module], copy / module
    source = target.read_text()
    if not mutants:
        return [], 0.0
    status, base, tail = run_tests(tests, copy, timeout=900)
    if status != "passed":
        raise SystemExit(f"{module}: the covering tests fail without any mutation:\n{tail}")
    limit = timeout or 3 * base + 30
    outcomes = []
    try:
        for i, m in enumerate(mutants, 1):
            target.write_text(m.apply(source))
            result, seconds, _ = run_tests(tests, copy, limit)
            target.write_text(source)
            status = {"failed": "killed", "passed": "survived", "timeout": "timeout"}[result]
            j = judged(m, source, entries) if status == "survived" else None
            outcomes.append(Outcome(m, status, seconds, m.diff(source), j or {}))
            print(f"  [{i}/{len(mutants)}] {module}:{m.line} {m.operator}: {status} ({seconds:.0f} s)"
                  + (f" [{j['status']}]" if j else ""), flush=True)
    finally:
        target.write_text(source)
    return outcomes, base


def summary_of(module: str, candidates: int, outcomes: list[Outcome], base: float) -> dict:
    count = {s: sum(o.status == s for o in outcomes) for s in ("killed", "survived", "timeout")}
    equivalent = sum(o.judgement.get("status") == "equivalent" for o in outcomes)
    scored = len(outcomes) - equivalent
    return {"module": module, "tests": list(TARGETS[module]), "baseline_s": round(base, 1), "candidates": candidates,
            "sampled": len(outcomes), **count, "equivalent": equivalent,
            "accepted": sum(o.judgement.get("status") == "accepted" for o in outcomes),
            "kill_rate": (count["killed"] + count["timeout"]) / scored if scored else 1.0,
            "survivors": [{**asdict(o.mutant), "diff": o.diff, "status": o.judgement.get("status", ""),
                           "reason": o.judgement.get("reason", "")} for o in outcomes if o.status == "survived"]}


def markdown(rows: list[dict], args: argparse.Namespace) -> str:
    killed = sum(r["killed"] + r["timeout"] for r in rows)
    scored = sum(r["sampled"] - r["equivalent"] for r in rows)
    lines = ["# Mutation testing", "",
             f"`python benchmarks/mutate.py --sample {args.sample} --seed {args.seed}` (modules run one by one with "
             "`--module`, rows merged)", "",
             f"Sample: {'every mutant' if not args.sample else f'{args.sample} mutants per module'} (seed "
             f"{args.seed}); each mutant runs `pytest -x` on the module's covering tests (`TARGETS` in "
             "benchmarks/mutate.py). Kill rate = (killed + timed out) / (sampled − equivalent); equivalent and "
             "accepted survivors are listed in benchmarks/mutation_equivalent.toml.", "",
             "| module | candidates | sampled | killed | timed out | survived | equivalent | accepted | kill rate |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['module']} | {r['candidates']} | {r['sampled']} | {r['killed']} | {r['timeout']} | "
                     f"{r['survived']} | {r['equivalent']} | {r['accepted']} | {100 * r['kill_rate']:.0f} % |")
    lines += ["", f"Overall: {killed} of {scored} non-equivalent mutants killed "
                  f"({100 * killed / scored if scored else 100:.0f} %).", "", "## Survivors", ""]
    for r in rows:
        for s in r["survivors"]:
            why = f"**{s['status']}**: {s['reason']}" if s.get("status") else "**not judged** (a missing test?)"
            lines += [f"- `{s['module']}:{s['line']}` {s['operator']} — {why}", "", "  ```diff",
                      *[f"  {x}" for x in s["diff"].splitlines()], "  ```", ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", action="append", choices=sorted(TARGETS), help="repeatable; default: all")
    parser.add_argument("--sample", type=int, default=20, help="mutants per module (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=None, help="seconds per mutant (default: 3× baseline + 30)")
    parser.add_argument("--list", action="store_true", help="print the sampled mutants and exit")
    parser.add_argument("--survivors", action="store_true",
                        help="rerun only the survivors stored by an earlier run of the same seed and sample")
    parser.add_argument("--out", type=Path, default=RESULTS / "mutation")
    args = parser.parse_args(argv)
    entries, rows = load_equivalent(), []
    with tempfile.TemporaryDirectory(prefix="compt-mutate-") as tmp:
        copy = Path(tmp) / "src"
        shutil.copytree(ROOT / "src" / "compt", copy / "compt", ignore=shutil.ignore_patterns("__pycache__"))
        for module in args.module or list(TARGETS):
            source = (copy / module).read_text()
            every = enumerate_mutants(source, module)
            picked = every if not args.sample or args.sample >= len(every) else \
                sorted(random.Random(f"{args.seed}:{module}").sample(every, args.sample), key=lambda m: m.start)
            old = stored(args.out.with_suffix(".json"), module, args) if args.survivors else None
            if old is not None:
                wanted = {_diff_lines(x["diff"]) for x in old["survivors"]}
                picked = [m for m in picked if m.lines(source) in wanted]
                if len({m.lines(source) for m in picked}) < len(wanted):
                    raise SystemExit(f"--survivors: some survivors of {module} are no longer in its source (the code "
                                     f"changed): run the module in full")
            if args.list:
                for m in picked:
                    print(f"{module}:{m.line} {m.operator}\n{m.diff(source)}")
                continue
            print(f"{module}: {len(picked)} of {len(every)} mutants, tests {' '.join(TARGETS[module])}", flush=True)
            outcomes, base = run_module(module, picked, copy, args.timeout, entries)
            row = summary_of(module, len(every), outcomes, base)
            rows.append(row if old is None else rescored(old, row))
    if args.list:
        return 0
    rows = merged(args.out.with_suffix(".json"), rows, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"seed": args.seed, "sample": args.sample, "modules": rows},
                                                        indent=2))
    args.out.with_suffix(".md").write_text(markdown(rows, args))
    print(markdown(rows, args))
    return 0


def stored(path: Path, module: str, args: argparse.Namespace) -> dict | None:
    """The stored row of `module` from an earlier run with this seed and sample (`--survivors`)."""
    old = json.loads(path.read_text()) if path.is_file() else {}
    if (old.get("seed"), old.get("sample")) != (args.seed, args.sample):
        raise SystemExit(f"--survivors: {path} holds no run with seed {args.seed} and sample {args.sample}")
    row = next((r for r in old["modules"] if r["module"] == module), None)
    if row is None:
        raise SystemExit(f"--survivors: {path} has no row for {module}")
    return row


def _diff_lines(diff: str) -> tuple[str, str]:
    """(original line, mutated line), stripped, of a stored one-line diff."""
    lines = diff.splitlines()
    return (next(x[1:].strip() for x in lines if x.startswith("-")),
            next(x[1:].strip() for x in lines if x.startswith("+")))


def rescored(old: dict, rerun: dict) -> dict:
    """`old`'s row with its survivors replaced by their rerun (`--survivors`): earlier kills stay counted."""
    row = {**rerun, "candidates": old["candidates"], "sampled": old["sampled"], "baseline_s": old["baseline_s"]}
    row["killed"] += old["killed"]
    row["timeout"] += old["timeout"]
    scored = row["sampled"] - row["equivalent"]
    row["kill_rate"] = (row["killed"] + row["timeout"]) / scored if scored else 1.0
    return row


def merged(path: Path, rows: list[dict], args: argparse.Namespace) -> list[dict]:
    """`rows` plus the other modules' rows of an earlier run with the same seed and sample (a run of some
    modules updates their rows), in `TARGETS` order."""
    old = json.loads(path.read_text()) if path.is_file() else {}
    keep = old.get("modules", []) if (old.get("seed"), old.get("sample")) == (args.seed, args.sample) else []
    by_module = {r["module"]: r for r in [*keep, *rows]}
    return [by_module[m] for m in TARGETS if m in by_module]


if __name__ == "__main__":
    sys.exit(main())
