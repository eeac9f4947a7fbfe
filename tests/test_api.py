"""The public Python API (`compt.__init__`): the README's example runs as written, and each call returns what
the CLI computes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import compt
from compt.errors import UserError

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    match = re.search(r"<!-- example: python-api[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert match, "README has no python-api example block"
    return match.group(1)


def test_the_readme_example_runs_as_written(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(readme_example(), "README.md", "exec"), scope)  # noqa: S102 - the documented example itself
    results, clip, child = scope["results"], scope["clip"], scope["child"]
    assert set(results) == {"chain-1", "chain-2", "baseline-2"}
    assert type(clip).__name__ == "CLIP" and not clip.training
    plan = compt.plan_chain(scope["cfg"])
    assert plan.acceleration == pytest.approx(plan.individual_total / plan.chain_cost)
    # the grown child computes its parent's image–text similarities (preserve is function-preserving)
    from compt.clip.models import create_model, get_model_config

    images, tokens = torch.randn(2, 3, 16, 16), torch.randint(1, 400, (3, 16))
    grown = create_model(get_model_config("test/C"), state_dict=child).eval()
    with torch.no_grad():
        want = clip.encode_image(images, normalize=True) @ clip.encode_text(tokens, normalize=True).T
        got = grown.encode_image(images, normalize=True) @ grown.encode_text(tokens, normalize=True).T
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_import_compt_loads_no_torch() -> None:
    out = subprocess.run([sys.executable, "-c", "import sys, compt; print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_api_errors_are_one_line_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="run config not found"):
        compt.plan_chain(tmp_path / "nope.toml")
    bare = tmp_path / "bare.pt"
    torch.save({"w": torch.zeros(2)}, bare)
    with pytest.raises(UserError, match="plain open_clip checkpoint without a model config"):
        compt.load_member(bare)
