"""`compt grow`: checkpoints in and out, open_clip round trip, parent inference, one-line errors, no partial output."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import open_clip
import pytest
import torch
from test_growth import assert_same_function, embeddings, parent_model

from compt.checkpoint import load_checkpoint, save_checkpoint, sha256_file
from compt.cli import main
from compt.clip.growth import infer
from compt.clip.models import build_model, create_model, get_model_config, register
from compt.errors import UserError


@pytest.fixture(scope="module")
def parent_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg, model = parent_model("tiny/ViT-S")
    path = tmp_path_factory.mktemp("parent") / "parent.pt"
    save_checkpoint(path, state_dict=model.state_dict(), model_config=cfg)
    return path


def grow_cli(*args: str) -> int:
    return main(["grow", *args])


def test_grow_writes_a_self_describing_checkpoint_that_open_clip_loads(parent_ckpt, tmp_path, capsys,
                                                                       monkeypatch) -> None:
    out = tmp_path / "child" / "child.pth"
    assert grow_cli("--from", str(parent_ckpt), "--to", "tiny/ViT-B", "--op", "preserve", "--out", str(out),
                    "--seed", "3") == 0
    assert "parent model tiny/ViT-S (from the checkpoint)" in capsys.readouterr().out
    ckpt = load_checkpoint(out)
    assert ckpt.model_config == get_model_config("tiny/ViT-B")
    assert ckpt.lineage == {"parent": str(parent_ckpt.resolve()), "parent_sha256": sha256_file(parent_ckpt),
                            "parent_model": "tiny/ViT-S", "operator": "preserve", "seed": 3, "stage": "grow"}
    pcfg = get_model_config("tiny/ViT-S")
    parent = create_model(pcfg, state_dict=load_checkpoint(parent_ckpt).state_dict).eval()
    ours = create_model(ckpt.model_config, state_dict=ckpt.state_dict).eval()
    assert_same_function(parent, ours, pcfg, ckpt.model_config)

    local = open_clip.create_model(f"local-dir:{out.parent}").eval()          # open_clip_config.json + *.pth
    model_cfg = json.loads((out.parent / "open_clip_config.json").read_text())["model_cfg"]
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "compt-grow-test", model_cfg)
    named = open_clip.create_model("compt-grow-test", pretrained=str(out)).eval()
    for model in (local, named):
        for a, b in zip(embeddings(model, ckpt.model_config), embeddings(ours, ckpt.model_config), strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("layout", ["bare", "module", "train-dict"])
def test_plain_open_clip_checkpoints(parent_ckpt, tmp_path, capsys, layout: str) -> None:
    sd = load_checkpoint(parent_ckpt).state_dict
    raw = {"bare": sd, "module": {f"module.{k}": v for k, v in sd.items()},
           "train-dict": {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}}[layout]
    torch.save(raw, tmp_path / "plain.pt")
    out = tmp_path / "c.pth"
    assert grow_cli("--from", str(tmp_path / "plain.pt"), "--to", "tiny/ViT-M", "--op", "corner",
                    "--out", str(out)) == 0
    assert "inferred parent model tiny/ViT-S" in capsys.readouterr().out
    assert grow_cli("--from", str(tmp_path / "plain.pt"), "--from-model", "tiny/ViT-S", "--to", "tiny/ViT-M",
                    "--op", "stack", "--out", str(tmp_path / "c2.pth")) == 0
    assert load_checkpoint(tmp_path / "c2.pth").lineage["operator"] == "stack"


def test_inference_prefers_identical_architectures_and_refuses_ambiguity(monkeypatch) -> None:
    with torch.device("meta"):
        state = build_model(get_model_config("paper/ViT-B-16")).state_dict()
    cfg, same = infer.infer_model_config(state)
    assert cfg.name == "paper/ViT-B-16" and "ViT-B-16" in same                # upstream ViT-B-16 is identical
    with pytest.raises(UserError, match="matches no registered model"):
        infer.infer_model_config({"visual.conv1.weight": torch.zeros(3, 3, 2, 2)})
    tiny = get_model_config("tiny/ViT-S")
    other = dataclasses.replace(tiny, name="tiny/other", text=dataclasses.replace(tiny.text, heads=2))
    monkeypatch.setattr(infer, "list_models", lambda: ["tiny/ViT-S", "tiny/other"])
    monkeypatch.setattr(infer, "get_model_config", lambda n: other if n == "tiny/other" else tiny)
    with torch.device("meta"):
        state = build_model(tiny).state_dict()
    with pytest.raises(UserError, match=r"several different models \(tiny/ViT-S, tiny/other\)"):
        infer.infer_model_config(state)


def _truncated(src: Path, dst: Path) -> None:
    dst.write_bytes(src.read_bytes()[:4096])


def _garbage(src: Path, dst: Path) -> None:
    dst.write_bytes(b"not a checkpoint" * 100)


def _plain_c(src: Path, dst: Path) -> None:
    torch.save(load_checkpoint(src).state_dict, dst)


@pytest.mark.parametrize(("make", "args", "message"), [
    (_truncated, ["--to", "tiny/ViT-B", "--op", "preserve"], "corrupt or truncated"),
    (_garbage, ["--to", "tiny/ViT-B", "--op", "corner"], "corrupt or truncated"),
    (None, ["--to", "tiny/ViT-C", "--op", "preserve"], "vision width 64 -> 48 shrinks"),
    (None, ["--to", "test/C", "--op", "corner"], "image size 32 -> 16 differs"),
    (None, ["--to", "test/Swin-B", "--op", "corner"], "cannot grow a ViT vision tower"),
    (None, ["--to", "tiny/ViT-B", "--op", "grw"], "unknown growth operator 'grw'"),
    (None, ["--to", "tiny/ViT-Q", "--op", "corner"], "unknown model 'tiny/ViT-Q'"),
    (_plain_c, ["--from-model", "tiny/ViT-C", "--to", "tiny/ViT-B", "--op", "preserve"],
     "parent state dict does not match tiny/ViT-C: positional_embedding has shape [32, 64], expected [32, 48]"),
    (None, ["--from-model", "tiny/ViT-C", "--to", "tiny/ViT-B", "--op", "corner"],
     "--from-model tiny/ViT-C contradicts the checkpoint's own model tiny/ViT-S"),
])
def test_errors_are_one_line_and_write_nothing(parent_ckpt, tmp_path, capsys, make, args, message) -> None:
    src = parent_ckpt
    if make is not None:
        src = tmp_path / "parent.pt"
        make(parent_ckpt, src)
    out_dir = tmp_path / "out"
    assert grow_cli("--from", str(src), *args, "--out", str(out_dir / "child.pt")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("compt grow: error: ") and message in err and "\n" not in err, err
    assert not out_dir.exists()


def test_head_dim_change_and_swin_preserve_are_refused(tmp_path, capsys) -> None:
    b = get_model_config("test/B")
    register(dataclasses.replace(b, name="test/B-one-text-head", text=dataclasses.replace(b.text, heads=1)))
    cases = [("test/A", "test/B-one-text-head", "preserve", "text head dim 8 -> 16 differs"),
             ("test/Swin-A", "test/Swin-B", "preserve", "does not support Swin")]
    for parent, child, op, message in cases:
        cfg = get_model_config(parent)
        path = tmp_path / f"{parent.replace('/', '_')}.pt"
        save_checkpoint(path, state_dict=build_model(cfg).state_dict(), model_config=cfg)
        assert grow_cli("--from", str(path), "--to", child, "--op", op, "--out", str(tmp_path / "o" / "c.pt")) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_out_must_not_overwrite_the_parent(parent_ckpt, capsys) -> None:
    before = sha256_file(parent_ckpt)
    assert grow_cli("--from", str(parent_ckpt), "--to", "tiny/ViT-B", "--op", "corner", "--out",
                    str(parent_ckpt)) == 2
    assert "must not overwrite the parent" in capsys.readouterr().err
    assert sha256_file(parent_ckpt) == before
