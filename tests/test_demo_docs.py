"""The demos' numbers in docs/runs.md and docs/lm.md are what `compt demo` printed for the committed runs of the
current demo configs (benchmarks/demo_docs.py; no training here)."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import demo_docs  # noqa: E402

from compt.commands.demo import demo_config_path  # noqa: E402
from compt.config import config_to_dict, load_config, read_run_config  # noqa: E402


@pytest.mark.parametrize("key", sorted(demo_docs.DEMOS))
def test_the_docs_demo_block_is_what_the_committed_run_prints(key: str) -> None:
    demo = demo_docs.DEMOS[key]
    text = (ROOT / demo.doc).read_text()
    assert demo_docs.render(text, demo.name, demo_docs.block(demo)) == text, \
        f"{demo.doc}'s demo block is not what the committed run gives: python benchmarks/demo_docs.py write"


@pytest.mark.parametrize("key", sorted(demo_docs.DEMOS))
def test_the_committed_demo_run_is_of_todays_demo_config(key: str) -> None:
    demo = demo_docs.DEMOS[key]
    committed = read_run_config(demo_docs.SUMMARIES / demo.name)
    today = load_config(demo_config_path(quick=False, lm="--lm" in demo.args))
    assert config_to_dict(committed) == config_to_dict(today), \
        "the demo config changed since its run was committed: python benchmarks/demo_docs.py run"


def test_render_replaces_only_the_named_block() -> None:
    text = "a\n<!-- demo:x -->\nold\n<!-- /demo:x -->\nb\n<!-- demo:y -->\nkeep\n<!-- /demo:y -->\n"
    assert demo_docs.render(text, "x", "new") == text.replace("old", "new")
    with pytest.raises(SystemExit):
        demo_docs.render("no block", "x", "new")
