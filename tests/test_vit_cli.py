"""The ViT paradigm's command-line members (`compt.vit.cli`, `compt.vit.finetune`): eval scores a checkpoint's
held-out top-1 (a run's member on its own data: the number the run recorded), grow writes an exact child and a
folder timm loads, finetune trains a new head (full or linear), files, skips and resumes; bad input is one line."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from compt import paradigm as registry
from compt.checkpoint import load_checkpoint
from compt.errors import UserError
from compt.vit.data import ShapesDataset, held_out_set, top1
from compt.vit.models import get_vit_config, load_exported

RAW = {"name": "vitcli", "baselines": False,
       "data": {"kind": "synthetic", "num_samples": 60, "eval_samples": 30, "seed": 3},
       "train": {"batch_size": 20, "lr": 3e-3, "min_lr": 1e-4, "warmup_steps": 2, "stage_warmup_steps": 1,
                 "log_every_steps": 1, "loader_workers": 0},
       "chain": [{"model": "vit-test/A", "epochs": 3},
                 {"model": "vit-test/B", "epochs": 1, "growth": "preserve", "distill": "kl"}]}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    """A trained two-member ViT run (the paradigm found through its entry point), and its results."""
    from compt.chain import train_run
    from compt.config import config_from_dict

    eps = [importlib.metadata.EntryPoint("vit", "compt.vit.paradigm:PARADIGM", registry.ENTRY_POINTS)]
    real = importlib.metadata.entry_points
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(importlib.metadata, "entry_points",
                   lambda **kw: eps if kw.get("group") == registry.ENTRY_POINTS else real(**kw))
        mp.setattr(registry, "_PLUGINS", [])
        out = tmp_path_factory.mktemp("vitrun")
        results = train_run(config_from_dict(RAW), out, progress=False)
        yield out, results   # vit stays registered: the package's own metadata lists it too


def vit() -> Any:
    return registry.paradigm_named("vit")


def eval_args(*argv: str) -> Any:
    from compt.cli import build_parser

    return build_parser().parse_args(["eval", *argv])


def test_eval_gives_the_top1_the_run_recorded_and_scores_other_data(run, tmp_path: Path, capsys) -> None:
    out, results = run
    for key, stage in (("chain-1", "01-vit-test_A"), ("chain-2", "02-vit-test_B")):
        ckpt = out / "chain" / stage / "final.pt"
        assert vit().eval_checkpoint(eval_args(str(ckpt), "--data", "synthetic", "--json",
                                               str(tmp_path / f"{key}.json"))) == 0
        got = json.loads((tmp_path / f"{key}.json").read_text())["metrics"]["top1"]
        assert got == pytest.approx(results[key]["metrics"]["top1"], abs=1e-9)
    assert "30 held-out images" in capsys.readouterr().out
    alone = tmp_path / "alone.pt"   # outside a run: the --seed and --eval-samples draw
    shutil.copy(out / "chain/01-vit-test_A/final.pt", alone)
    assert vit().eval_checkpoint(eval_args(str(alone), "--data", "synthetic", "--eval-samples", "50", "--seed", "7",
                                           "--json", str(tmp_path / "alone.json"))) == 0
    ckpt = load_checkpoint(alone)
    cfg = ckpt.model_config
    want = top1(vit().create(cfg, ckpt.state_dict), ShapesDataset(cfg, 50, 10_000, 7))
    assert json.loads((tmp_path / "alone.json").read_text())["metrics"]["top1"] == want
    data = json.loads((tmp_path / "alone.json").read_text())["data"]
    assert (data["seed"], data["eval_samples"]) == (7, 50)


@pytest.mark.parametrize("argv, message", [
    (("--data", "synthetic", "--probe-samples", "5"), "--probe-samples: not an option of ViT evaluation"),
    (("--data", "folder"), "--data folder needs --data-path"),
    (("--data", "synthetic", "--model", "vit-test/B"), "holds a vit-test/A model, not vit-test/B"),
    (("--data", "synthetic", "--eval-samples", "0"), "--eval-samples must be positive"),
])
def test_eval_refuses_bad_input_in_one_line(run, argv: tuple[str, ...], message: str) -> None:
    out, _ = run
    with pytest.raises(UserError, match=message) as e:
        vit().eval_checkpoint(eval_args(str(out / "chain/01-vit-test_A/final.pt"), *argv))
    assert "\n" not in str(e.value)


def test_grow_writes_an_exact_child_and_a_folder_timm_loads(run, tmp_path: Path, capsys) -> None:
    from compt.cli import main

    out, _ = run
    parent = load_checkpoint(out / "chain/01-vit-test_A/final.pt")
    child_path = tmp_path / "c.pt"
    assert main(["grow", "--from", str(out / "chain/01-vit-test_A/final.pt"), "--to", "vit-test/C", "--op",
                 "preserve", "--out", str(child_path), "--seed", "4"]) == 0
    assert "(function-preserving)" in capsys.readouterr().out
    child = load_checkpoint(child_path)
    assert child.model_config == get_vit_config("vit-test/C") and child.lineage["operator"] == "preserve"
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        want = vit().create(parent.model_config, parent.state_dict).eval()(x)
        got = vit().create(child.model_config, child.state_dict).eval()(x)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        torch.testing.assert_close(load_exported(tmp_path / "c-timm").eval()(x), got, atol=0, rtol=0)
    assert any((child.state_dict[k] != 0).any() for k in child.state_dict if k.startswith("blocks.2."))


@pytest.mark.parametrize("to, op, message", [
    ("deit/S", "preserve", "cannot grow from vit-test/A: img_size differs"),
    ("vit-test/C", "stack", "unknown ViT growth operator 'stack'"),
    ("vit-test/B", "preserve", "--from-model names the model of a plain open_clip checkpoint"),
])
def test_grow_refuses_bad_input_with_exit_2(run, tmp_path: Path, capsys, to: str, op: str, message: str) -> None:
    from compt.cli import main

    out, _ = run
    extra = ["--from-model", "vit-test/A"] if "from-model" in message else []
    assert main(["grow", "--from", str(out / "chain/01-vit-test_A/final.pt"), "--to", to, "--op", op, "--out",
                 str(tmp_path / "x.pt"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "x.pt").exists()


SMALL = {"epochs": 4, "batch_size": 16, "lr": 5e-3, "train_samples": 80, "eval_samples": 40, "warmup_epochs": 0.5}


def test_linear_finetuning_trains_the_head_alone_and_full_finetuning_the_trunk(run) -> None:
    from compt.finetune_config import FinetuneConfig
    from compt.vit.finetune import finetune_classifier, labelled_sets

    out, _ = run
    ckpt = load_checkpoint(out / "chain/02-vit-test_B/final.pt")
    cfg = FinetuneConfig(mode="linear", **SMALL)
    _, train, held, classes = labelled_sets("synthetic", ckpt.model_config, cfg)
    model = vit().create(ckpt.model_config, ckpt.state_dict)
    res = finetune_classifier(model, train, held, classes, cfg)
    trunk = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    assert all(torch.equal(v, ckpt.state_dict[k]) for k, v in trunk.items())   # frozen trunk, bit for bit
    assert model.head.weight.abs().sum() > 0 and res["steps"] == 4 * 5
    assert res["top1"] == top1(model, held) == res["history"][-1]["top1"]   # the head on the trunk, as timm runs it
    assert res["top1"] > 10.0 + 20   # a zero head scores 10 % (class 0) on 10 balanced classes
    full = vit().create(ckpt.model_config, ckpt.state_dict)
    got = finetune_classifier(full, train, held, classes, FinetuneConfig(mode="full", **SMALL))
    assert not torch.equal(full.blocks[0].attn.qkv.weight, ckpt.state_dict["blocks.0.attn.qkv.weight"])
    assert got["top1"] == top1(full, held) and got["history"] != res["history"]


def test_layer_decay_scales_each_timm_group(run) -> None:
    from compt.finetune_config import FinetuneConfig
    from compt.vit.finetune import param_groups

    model = vit().create(get_vit_config("vit-test/B"), None)   # stem, 2 blocks, head
    groups = param_groups(model, FinetuneConfig(layer_decay=0.5, weight_decay=0.1))
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert scale[id(model.head.weight)] == 1.0 and scale[id(model.norm.weight)] == 0.5
    assert scale[id(model.blocks[0].mlp.fc1.weight)] == 0.25 and scale[id(model.pos_embed)] == 0.125
    assert decay[id(model.blocks[0].mlp.fc1.weight)] == 0.1 and decay[id(model.blocks[0].mlp.fc1.bias)] == 0.0


def test_finetune_files_skips_resumes_and_refuses_other_settings(run, tmp_path: Path, monkeypatch) -> None:
    import compt.vit.finetune as ft

    out, _ = run
    results = vit().finetune(out, data="synthetic", mode="linear", progress=False, **SMALL)
    assert [r["member"] for r in results] == ["chain/01-vit-test_A", "chain/02-vit-test_B"]
    stored = json.loads((out / "finetune/chain/02-vit-test_B/synthetic-linear.json").read_text())
    assert stored["top1"] == results[1]["top1"] and stored["train_size"] == 80 and stored["held_out_size"] == 40
    monkeypatch.setattr(ft, "finetune_classifier", None)   # a stored result is not trained again
    assert vit().finetune(out, data="synthetic", mode="linear", progress=False, **SMALL) == results
    with pytest.raises(UserError, match="made with other settings"):
        vit().finetune(out, data="synthetic", mode="linear", progress=False, **SMALL | {"lr": 1e-3})
    monkeypatch.undo()
    lone = tmp_path / "b.pt"
    shutil.copy(out / "chain/02-vit-test_B/final.pt", lone)
    real = ft.finetune_classifier

    def killed(*a: Any, save: Any, **kw: Any) -> Any:   # dies after its second epoch's state is saved
        def save_then_die(s: dict) -> None:
            save(s)
            if len(s["history"]) == 2:
                raise RuntimeError("killed")
        return real(*a, save=save_then_die, **kw)

    monkeypatch.setattr(ft, "finetune_classifier", killed)
    with pytest.raises(RuntimeError, match="killed"):
        vit().finetune(lone, data="synthetic", mode="full", progress=False, **SMALL)
    monkeypatch.undo()
    resumed = vit().finetune(lone, data="synthetic", mode="full", progress=False, **SMALL)[0]
    assert resumed["resumed_from_epoch"] == 2
    again = vit().finetune(lone, data="synthetic", mode="full", progress=False, redo=True, **SMALL)[0]
    assert again["resumed_from_epoch"] == 0 and again["history"] == resumed["history"]


@pytest.mark.parametrize("data, message", [("imagenet", "unknown fine-tuning data kind 'imagenet'"),
                                           ("folder", "--data folder needs its path"),
                                           ("synthetic:colour", "--data synthetic takes no argument")])
def test_finetune_refuses_bad_data_in_one_line(run, data: str, message: str) -> None:
    out, _ = run
    with pytest.raises(UserError, match=message):
        vit().finetune(out / "chain/01-vit-test_A/final.pt", data=data, progress=False, **SMALL)


def test_a_held_out_set_is_the_one_the_run_scores(run) -> None:
    from compt.config import read_run_config

    out, results = run
    data = read_run_config(out).data
    ckpt = load_checkpoint(out / "chain/01-vit-test_A/final.pt")
    held = held_out_set(data, ckpt.model_config)
    assert len(held) == 30 and torch.equal(held.labels, (60 + torch.arange(30)) % 10)
    assert top1(vit().create(ckpt.model_config, ckpt.state_dict), held) == results["chain-1"]["metrics"]["top1"]


def test_plan_of_a_vit_run_says_nothing_of_captions(run, tmp_path: Path, capsys) -> None:
    from compt.cli import main

    out, _ = run
    assert main(["plan", str(out / "config.toml")]) == 0
    text = capsys.readouterr().out
    assert "60 samples (one labelled image each)" in text and "caption" not in text


def test_the_ema_weights_are_scored_and_the_trained_ones_kept(run) -> None:
    from compt.finetune_config import FinetuneConfig
    from compt.vit.finetune import finetune_classifier, labelled_sets

    out, _ = run
    ckpt = load_checkpoint(out / "chain/02-vit-test_B/final.pt")
    cfg = FinetuneConfig(mode="linear", ema=0.9, **SMALL)
    _, train, held, classes = labelled_sets("synthetic", ckpt.model_config, cfg)
    runs = {}
    for ema in (0.0, 0.9):
        model = vit().create(ckpt.model_config, ckpt.state_dict)
        runs[ema] = finetune_classifier(model, train, held, classes, FinetuneConfig(mode="linear", ema=ema,
                                                                                       **SMALL)), model
    (plain, a), (smoothed, b) = runs[0.0], runs[0.9]
    assert torch.equal(a.head.weight, b.head.weight)   # the EMA does not touch the trained weights
    assert [h["loss"] for h in smoothed["history"]] == [h["loss"] for h in plain["history"]]
    scored = [h["top1"] for h in smoothed["history"]]
    assert scored != [h["top1"] for h in plain["history"]] and smoothed["top1"] != top1(b, held)
    assert min(scored[1:]) > 10.0   # the average moves off the zero head (which scores 10 %)


def test_prune_is_refused_in_one_line(run, tmp_path: Path, capsys) -> None:
    from compt.cli import main

    out, _ = run
    assert main(["prune", "--from", str(out / "chain/02-vit-test_B/final.pt"), "--to", "vit-test/A", "--out",
                 str(tmp_path / "a.pt")]) == 2
    assert capsys.readouterr().err == "compt prune: error: the vit paradigm does not support compt prune\n"


def test_compt_eval_and_finetune_reach_the_vit_paradigm(run, tmp_path: Path, capsys) -> None:
    """`compt eval` asks the checkpoint's own paradigm first and `compt finetune` the target's, so a ViT member on
    synthetic data is scored by compt.vit (not CLIP's suite of that kind) and a ViT run fine-tuned by it."""
    from compt.cli import main

    out, results = run
    ckpt = out / "chain/01-vit-test_A/final.pt"
    assert main(["eval", str(ckpt), "--data", "synthetic", "--json", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["metrics"]["top1"] == results["chain-1"]["metrics"]["top1"]
    shutil.copytree(out, tmp_path / "run", ignore=shutil.ignore_patterns("finetune"))
    assert main(["finetune", str(tmp_path / "run"), "--mode", "linear", "--epochs", "2", "--train-samples", "40",
                 "--eval-samples", "20", "--no-progress"]) == 0
    stored = json.loads((tmp_path / "run/finetune/chain/02-vit-test_B/synthetic-linear.json").read_text())
    assert stored["settings"]["epochs"] == 2 and stored["settings"]["layer_decay"] == 0.75   # the ViT recipe's default
    assert f"{stored['top1']:7.2f}" in capsys.readouterr().out
