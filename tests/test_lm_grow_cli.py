"""`compt grow` for language models: a compt LM checkpoint grows into a larger registered size, written as a
compt checkpoint and a Hugging Face folder, with the growth checked on the console."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compt.checkpoint import load_checkpoint, save_checkpoint
from compt.cli import main
from compt.lm.models import create_lm, get_lm_config


@pytest.fixture
def parent(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(tmp_path / "a.pt", state_dict=create_lm("lm/test-A").state_dict(),
                           model_config=get_lm_config("lm/test-A"), lineage={})


def test_grow_an_lm_checkpoint_exactly_into_a_folder_transformers_loads(parent: Path, tmp_path: Path,
                                                                         capsys) -> None:
    from transformers import AutoModelForCausalLM

    out = tmp_path / "child" / "b.pt"
    assert main(["grow", "--from", str(parent), "--to", "lm/test-B", "--op", "preserve", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "grew lm/test-A -> lm/test-B with preserve" in printed and "(function-preserving)" in printed
    child = load_checkpoint(out)
    assert child.paradigm == "lm" and child.lineage["operator"] == "preserve"
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "child" / "b-hf").eval()
    ids = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        want = create_lm("lm/test-A", state_dict=load_checkpoint(parent).state_dict).eval()(input_ids=ids).logits
        torch.testing.assert_close(hf(input_ids=ids).logits, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("to", "op", "match"), [
    ("tiny/ViT-S", "preserve", "holds a language model and tiny/ViT-S is a CLIP model"),
    ("lm/no-such", "preserve", "unknown model 'lm/no-such'"),
    ("lm/test-B", "sideways", "unknown"),
])
def test_bad_lm_growth_is_one_line_and_writes_nothing(parent: Path, tmp_path: Path, capsys, to: str, op: str,
                                                      match: str) -> None:
    out = tmp_path / "x.pt"
    assert main(["grow", "--from", str(parent), "--to", to, "--op", op, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1 and not out.exists()


def test_grow_a_hugging_face_folder_into_a_child_given_by_its_config(parent: Path, tmp_path: Path, capsys) -> None:
    """Parent: a Hugging Face Llama folder; child: the config.json of another folder (no registered name)."""
    from compt.lm.models import export_pretrained

    a = load_checkpoint(parent)
    hf_parent = export_pretrained(a.model_config, a.state_dict, tmp_path / "parent-hf")
    child_shape = export_pretrained(get_lm_config("lm/test-B"), create_lm("lm/test-B").state_dict(), tmp_path / "b")
    out = tmp_path / "grown" / "c.pt"
    assert main(["grow", "--from", str(hf_parent), "--to", str(child_shape / "config.json"), "--op", "preserve",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "grew hf:parent-hf -> hf:b with preserve" in printed and "(function-preserving)" in printed
    grown = load_checkpoint(out)
    assert grown.model_config.hidden == get_lm_config("lm/test-B").hidden and grown.lineage["parent_sha256"]


def test_a_folder_that_is_not_a_llama_is_one_line(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "gpt"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "gpt2"}')
    assert main(["grow", "--from", str(folder), "--to", "lm/test-B", "--op", "preserve",
                 "--out", str(tmp_path / "x.pt")]) == 2
    assert "model_type 'gpt2'; compt grows Llama decoders only" in capsys.readouterr().err
