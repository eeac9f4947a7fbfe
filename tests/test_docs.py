"""The user docs (README.md, docs/*.md) stay true to the code: the generated config reference is current, every
relative link and anchor exists, every documented `compt …` command line parses with the real parser, a few of
them run and print what the docs say, and each command's --help names an existing page."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from compt import docs_gen
from compt.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GENERATED = {ROOT / "docs" / "results.md"}  # written by benchmarks/make_results.py from the runs
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
USER_PAGES = [p for p in PAGES if p not in GENERATED]

FENCE = re.compile(r"^[ \t]*```([\w+-]*)[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)  # fenced blocks, indented too
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
SHELL = {"", "bash", "sh", "shell", "console"}


def prose(text: str) -> str:
    """`text` without fenced code blocks and inline code spans (links there are not links)."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", FENCE.sub("", page.read_text()), re.M)}


def command_lines() -> list[tuple[str, str]]:
    """(page name, line) of every `compt …` (or `torchrun … -m compt …`) line in the pages' shell code blocks."""
    found = []
    for page in PAGES:
        for lang, body in FENCE.findall(page.read_text()):
            if lang not in SHELL:
                continue
            for line in body.replace("\\\n", " ").splitlines():
                line = line.strip().removeprefix("$ ")
                if line.startswith("compt ") or (line.startswith("torchrun ") and " -m compt " in line):
                    found.append((page.name, line))
    return found


def argv_of(line: str) -> list[str]:
    words = shlex.split(line, comments=True)
    return words[words.index("compt") + 1:]


def test_configs_page_is_generated_from_the_config_dataclasses() -> None:
    page = ROOT / "docs" / "configs.md"
    assert page.read_text() == docs_gen.render(), "docs/configs.md is stale: run python -m compt.docs_gen"


def test_config_page_documents_every_field() -> None:
    text = (ROOT / "docs" / "configs.md").read_text()
    for cls, *_ in docs_gen.SECTIONS:
        for doc in docs_gen.field_docs(cls):
            assert f"| `{doc.name}` |" in text and doc.meaning, (cls.__name__, doc.name)


def test_readme_reads_in_five_minutes() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= 180, f"README.md has {len(lines)} lines (at most 180): move material to docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_and_anchors_exist(page: Path) -> None:
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name}: link to missing {target}"
        if anchor and dest.suffix == ".md":
            assert anchor in anchors(dest), f"{page.name}: no heading #{anchor} in {dest.name}"


def test_documented_command_lines_parse() -> None:
    lines = command_lines()
    assert len(lines) >= 20, lines  # the extraction itself works
    parser = build_parser()
    for page, line in lines:
        try:
            parser.parse_args(argv_of(line))
        except SystemExit:
            pytest.fail(f"{page}: `{line}` does not parse")


@pytest.mark.parametrize(("line", "expected"), [
    ("compt models --family tiny", ["tiny/ViT-N", "tiny/ViT-S"]),
    ("compt flops tiny/ViT-S", ["gflops", "0.04394"]),
    ("compt plan configs/paper-cc3m-vit.toml", ["28.2% of training paper/ViT-L-16 alone", "71.8%", "5.57×"]),
])
def test_documented_commands_run_and_print_what_the_docs_say(line: str, expected: list[str], capsys,
                                                             monkeypatch) -> None:
    assert line in {cmd for _, cmd in command_lines()}, f"`{line}` is no longer in the docs"
    monkeypatch.chdir(ROOT)
    assert main(argv_of(line)) == 0
    out = capsys.readouterr().out
    for text in expected:
        assert text in out, (line, text)


def test_the_readme_run_config_is_a_valid_config(tmp_path: Path) -> None:
    import compt

    blocks = [body for lang, body in FENCE.findall(README.read_text()) if lang == "toml"]
    assert len(blocks) == 1
    (tmp_path / "run.toml").write_text(blocks[0])
    plan = compt.plan_chain(tmp_path / "run.toml")
    assert plan.acceleration > 1


def test_every_command_help_names_an_existing_doc_page() -> None:
    parser = build_parser()
    assert "docs/" in (parser.description or "")
    commands = next(a for a in parser._actions if a.dest == "command").choices  # noqa: SLF001 - argparse's own
    for name, sub in commands.items():
        pages = re.findall(r"docs/[\w-]+\.md", sub.description or "")
        assert pages, f"compt {name} --help names no doc page"
        for page in pages:
            assert (ROOT / page).is_file(), (name, page)


@pytest.mark.parametrize("page", USER_PAGES, ids=lambda p: p.name)
def test_user_docs_say_nothing_about_how_the_project_was_built(page: Path) -> None:
    text = page.read_text()
    for pattern in (r"\bsessions?\b", r"\bround \d", r"\brefactor", r"\bcommit `?[0-9a-f]{7,40}\b"):
        assert not re.search(pattern, text, re.I), (page.name, pattern)
