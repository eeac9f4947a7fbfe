"""`compt finetune`: the recipe reaches high held-out accuracy on a separable toy set in both modes, linear mode
leaves the tower bit-identical, layer-wise lr decay gives the formula's lrs, finished members are skipped, a
killed fine-tune resumes to the same numbers, the report's table has the right Δ, bad inputs exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tomli_w
import torch
from PIL import Image

import compt
from compt.checkpoint import save_checkpoint
from compt.cli import main
from compt.clip.data.real import FASHION_DIR
from compt.clip.finetune.recipe import Split, finetune_model, layer_ids, param_groups
from compt.clip.models import create_model, get_model_config
from compt.errors import UserError
from compt.finetune_config import FinetuneConfig
from compt.report import write_report

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
FAST = {"epochs": 3, "batch_size": 16, "lr": 1e-2, "warmup_epochs": 0.5}


@pytest.fixture(scope="module")
def colours(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image folder of 3 trivially separable classes: 20 noisy solid-colour 16×16 images each."""
    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    for name, rgb in COLOURS.items():
        (root / name).mkdir()
        for i in range(20):
            pixels = np.clip(np.array(rgb) + rng.normal(0, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def write_run(d: Path, models: tuple[str, str] = ("test/A", "test/B")) -> Path:
    """A finished two-member run with freshly initialised members (chain 1 = baseline 1, chain 2, baseline 2)."""
    raw = {"name": "toy", "baselines": True, "data": {"kind": "synthetic"},
           "chain": [{"model": models[0], "epochs": 4}, {"model": models[1], "epochs": 1}]}
    d.mkdir(parents=True)
    (d / "config.toml").write_text(tomli_w.dumps(raw))
    for i, (stage, model) in enumerate((("chain/01-test_A", models[0]), ("chain/02-test_B", models[1]),
                                        ("baselines/test_B", models[1]))):
        torch.manual_seed(i)
        cfg = get_model_config(model)
        save_checkpoint(d / stage / "final.pt", state_dict=create_model(cfg).state_dict(), model_config=cfg)
        res = {"checkpoint": "final.pt", "metrics": {"retrieval_r1": 5.0}, "steps": 4, "samples": 64,
               "train_flops": 1e9, "wall_clock_s": 1.0, "history": []}
        (d / stage / "result.json").write_text(json.dumps(res))
    return d


def splits(colours: Path, size: int = 16) -> tuple[Split, Split]:
    from compt.clip.finetune.data import load_splits, parse_data

    return load_splits(parse_data(f"folder:{colours}"), size, FinetuneConfig())


@pytest.mark.parametrize("mode", ["full", "linear"])
def test_every_member_reaches_high_held_out_accuracy_on_a_separable_folder(tmp_path: Path, colours: Path,
                                                                          mode: str) -> None:
    run = write_run(tmp_path / "run")
    results = compt.finetune_run(run, data=f"folder:{colours}", mode=mode, progress=False, **FAST)
    assert [r["member"] for r in results] == ["chain/01-test_A", "chain/02-test_B", "baselines/test_B"]
    assert [r["methods"] for r in results] == [["chain", "individual"], ["chain"], ["individual"]]
    name = f"folder-{colours.name}" + ("-linear" if mode == "linear" else "")
    for r in results:
        assert r["top1"] >= 90.0, r["history"]
        assert (r["train_size"], r["held_out_size"], r["epochs"], r["mode"]) == (48, 12, 3, mode)
        stored = json.loads((run / "finetune" / r["member"] / f"{name}.json").read_text())
        assert stored["top1"] == r["top1"] and stored["settings"]["lr"] == 1e-2
        assert not (run / "finetune" / r["member"] / f"{name}.state.pt").exists()


def test_the_held_out_split_is_disjoint_and_fixed_by_the_seed(colours: Path) -> None:
    from compt.clip.finetune.data import load_splits, parse_data

    data = parse_data(f"folder:{colours}")
    (train, held), (train2, held2) = (load_splits(data, 16, FinetuneConfig()) for _ in range(2))
    assert torch.equal(held.images, held2.images) and torch.equal(train.labels, train2.labels)
    flat = {bytes(x.numpy()) for x in train.images}
    assert not flat & {bytes(x.numpy()) for x in held.images} and len(flat) + len(held.labels) == 60
    other = load_splits(data, 16, FinetuneConfig(seed=1))[1]
    assert not torch.equal(other.images, held.images)


def test_linear_mode_leaves_the_tower_bit_identical(colours: Path) -> None:
    cfg = get_model_config("test/A")
    visual = create_model(cfg).visual
    before = {k: v.clone() for k, v in visual.state_dict().items()}
    train, held = splits(colours)
    res = finetune_model(visual, cfg.embed_dim, train, held, FinetuneConfig(mode="linear", **FAST))
    assert res["top1"] >= 90.0
    assert all(torch.equal(before[k], v) for k, v in visual.state_dict().items())
    full = create_model(cfg).visual
    finetune_model(full, cfg.embed_dim, train, held, FinetuneConfig(mode="full", **FAST))
    assert not torch.equal(full.conv1.weight, before["conv1.weight"])   # full mode does train the tower


def test_layer_wise_lr_decay_gives_each_group_the_formula_lr(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = get_model_config("test/B")
    visual = create_model(cfg).visual           # L = 2 blocks
    head = torch.nn.Linear(cfg.embed_dim, 3)
    ids, depth = layer_ids(visual)
    assert depth == 2
    assert ids["conv1.weight"] == ids["positional_embedding"] == ids["class_embedding"] == ids["ln_pre.weight"] == 0
    assert ids["transformer.resblocks.0.attn.in_proj_weight"] == 1 and ids["transformer.resblocks.1.ln_2.bias"] == 2
    assert ids["ln_post.weight"] == ids["proj"] == 3
    groups = param_groups(visual, head, FinetuneConfig(layer_decay=0.5, weight_decay=0.1))
    assert {g["layer"]: g["lr_scale"] for g in groups} == {0: 0.5 ** 3, 1: 0.5 ** 2, 2: 0.5, 3: 1.0}
    assert sum(len(g["params"]) for g in groups) == len(list(visual.parameters())) + 2
    by_param = {id(p): g for g in groups for p in g["params"]}
    assert by_param[id(head.weight)]["weight_decay"] == 0.1 and by_param[id(head.bias)]["weight_decay"] == 0.0
    assert by_param[id(visual.transformer.resblocks[0].ln_1.weight)]["weight_decay"] == 0.0
    # the loop sets lr_l(t) = lr(t) · decay^(L + 1 − l); with no warmup lr(0) = lr
    seen: list[dict[int, float]] = []
    step = torch.optim.AdamW.step

    def recording(self, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append({g["layer"]: g["lr"] for g in self.param_groups})
        return step(self, *a, **k)
    monkeypatch.setattr(torch.optim.AdamW, "step", recording)
    finetune_model(visual, cfg.embed_dim, *_toy(), FinetuneConfig(lr=0.2, layer_decay=0.5, epochs=1, batch_size=8,
                                                                  warmup_epochs=0))
    assert seen[0] == pytest.approx({0: 0.2 * 0.5 ** 3, 1: 0.2 * 0.5 ** 2, 2: 0.2 * 0.5, 3: 0.2})


def _toy() -> tuple[Split, Split]:
    images = torch.randint(0, 255, (8, 3, 16, 16), dtype=torch.uint8)
    return Split(images, torch.arange(8) % 3, ("a", "b", "c")), Split(images, torch.arange(8) % 3, ("a", "b", "c"))


def test_finished_members_are_skipped_and_other_settings_need_redo(tmp_path: Path, colours: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    run = write_run(tmp_path / "run")
    compt.finetune_run(run, data=f"folder:{colours}", mode="linear", progress=False, **FAST)
    files = sorted((run / "finetune").glob("**/*.json"))
    stamp = {f: (f.stat().st_mtime_ns, f.read_bytes()) for f in files}
    capsys.readouterr()
    again = compt.finetune_run(run, data=f"folder:{colours}", mode="linear", progress=False, **FAST)
    assert {f: (f.stat().st_mtime_ns, f.read_bytes()) for f in files} == stamp
    assert capsys.readouterr().out.count("already done") == 3 and len(again) == 3
    with pytest.raises(UserError, match=r"other settings \(lr differ\): pass --redo"):
        compt.finetune_run(run, data=f"folder:{colours}", mode="linear", progress=False, **{**FAST, "lr": 0.1})


def test_a_killed_finetune_resumes_from_its_epoch_state_to_the_same_numbers(tmp_path: Path, colours: Path,
                                                                           monkeypatch: pytest.MonkeyPatch,
                                                                           capsys: pytest.CaptureFixture) -> None:
    import compt.clip.finetune.runner as runner

    cfg = get_model_config("test/A")
    one = tmp_path / "one.pt"
    save_checkpoint(one, state_dict=create_model(cfg).state_dict(), model_config=cfg)
    reference = compt.finetune_run(one, data=f"folder:{colours}", progress=False, **FAST)[0]
    (tmp_path / "finetune" / f"folder-{colours.name}.json").unlink()
    real_save = runner.atomic_save

    def killed_after_saving(obj, path):  # noqa: ANN001, ANN202
        real_save(obj, path)
        if len(obj["history"]) == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(runner, "atomic_save", killed_after_saving)
    with pytest.raises(KeyboardInterrupt):
        compt.finetune_run(one, data=f"folder:{colours}", progress=False, **FAST)
    assert (tmp_path / "finetune" / f"folder-{colours.name}.state.pt").is_file()
    monkeypatch.setattr(runner, "atomic_save", real_save)
    resumed = compt.finetune_run(one, data=f"folder:{colours}", progress=False, **FAST)[0]
    assert "resuming from its own checkpoint after epoch 2 of 3" in capsys.readouterr().out
    assert resumed["resumed_from_epoch"] == 2
    assert resumed["history"] == reference["history"] and resumed["top1"] == reference["top1"]


def _result(run: Path, member: str, model: str, methods: list[str], index: int, mode: str, top1: float) -> None:
    name = "synthetic" + ("-linear" if mode == "linear" else "")
    path = run / "finetune" / member / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"member": member, "model": model, "methods": methods, "index": index,
                                "dataset": "synthetic", "mode": mode, "top1": top1}))


def test_report_tabulates_chain_against_individual_with_mean_and_delta(tmp_path: Path) -> None:
    runs = [write_run(tmp_path / f"seed{s}") for s in (0, 1)]
    for run, (a, chain_b, ind_b) in zip(runs, ((50.0, 70.0, 60.0), (54.0, 74.0, 68.0))):
        _result(run, "chain/01-test_A", "test/A", ["chain", "individual"], 0, "full", a)
        _result(run, "chain/02-test_B", "test/B", ["chain"], 1, "full", chain_b)
        _result(run, "baselines/test_B", "test/B", ["individual"], 1, "full", ind_b)
    _result(runs[0], "chain/02-test_B", "test/B", ["chain"], 1, "linear", 40.0)
    out, md = write_report(runs)
    assert "## Fine-tuning (`compt finetune`)" in md and "mean ± std over 2 runs" in md
    # test/B full: chain mean 72 ± 2.8, individual 64 ± 5.7, Δ = 72 − 64 = +8; linear: chain only (one run)
    assert "| test/B | 72.0 ± 2.8 | 64.0 ± 5.7 | +8.0 | 40.0 | — |  |" in md
    assert "| test/A | 52.0 ± 2.8 | 52.0 ± 2.8 | +0.0 | — | — |  |" in md
    assert "synthetic full chain | synthetic full indiv. | synthetic full Δ | synthetic linear chain" in md
    assert json.loads((out / "finetune.json").read_text())["models"] == ["test/A", "test/B"]
    _, plain = write_report([write_run(tmp_path / "none")])
    assert "Fine-tuning" not in plain


@pytest.mark.parametrize("args, message", [
    (["{missing}"], "is not a run directory"),
    (["{run}", "--data", "cifar10"], "unknown fine-tuning data kind 'cifar10'"),
    (["{run}", "--data", "synthetic:texture"], "unknown synthetic label 'texture'"),
    (["{run}", "--data", "folder"], "--data folder needs its path"),
    (["{run}", "--data", "folder:{missing}"], "image folder not found"),
    (["{run}", "--data", "fashion-mnist:{missing}"], "Fashion-MNIST files not found"),
    (["{run}", "--epochs", "0"], "epochs must be positive"),
    (["{run}", "--layer-decay", "1.5"], "layer_decay must be in"),
])
def test_bad_inputs_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str],
                                         message: str) -> None:
    run = write_run(tmp_path / "run")
    argv = [a.format(run=run, missing=tmp_path / "missing") for a in args]
    assert main(["finetune", *argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("compt finetune: error:")


@pytest.mark.skipif(not Path(FASHION_DIR).is_dir(), reason="Debian dataset-fashion-mnist not installed")
def test_fashion_mnist_fine_tunes_a_member(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run")
    res = compt.finetune_run(run, data="fashion-mnist", mode="linear", progress=False, train_samples=200,
                             eval_samples=100, **FAST)
    # top-1 above twice chance (10 classes)
    assert all(r["train_size"] == 200 and r["held_out_size"] == 100 and r["top1"] > 20.0 for r in res)


def test_the_study_files_results_as_summaries_and_make_results_says_where_the_gap_stays(
        tmp_path: Path, colours: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import finetune_study
    import make_results

    bench, summaries = tmp_path / "bench", tmp_path / "summaries"
    assert make_results.finetune_section(summaries)[-2] == "_not run yet_"
    run = write_run(bench / "exp" / "var" / "seed0")
    settings = [f"--set={k}={v}" for k, v in {**FAST, "epochs": 1}.items()]
    assert finetune_study.main([str(run), "--data", f"folder:{colours}", "fashion-mnist:/nowhere", "--modes",
                                "linear", "--runs-root", str(bench), "--summaries", str(summaries), "--no-progress",
                                *settings]) == 0
    copied = sorted(p.relative_to(summaries) for p in summaries.glob("**/*.json"))
    assert copied == [Path(f"exp/var/seed0/finetune/{m}/folder-{colours.name}-linear.json")
                      for m in ("baselines/test_B", "chain/01-test_A", "chain/02-test_B")]
    _result(summaries / "exp" / "var" / "seed0", "chain/02-test_B", "test/B", ["chain"], 1, "full", 60.0)
    _result(summaries / "exp" / "var" / "seed0", "baselines/test_B", "test/B", ["individual"], 1, "full", 65.0)
    text = "\n".join(make_results.finetune_section(summaries))
    assert f"| {summaries / 'exp' / 'var'} | test/B | synthetic | full | 60.0 | 65.0 | -5.0 | 1 |" in text
    assert "Δ stays negative after fine-tuning in 1 of 2 cases" in text and "test/A |" not in text


def test_a_swin_tower_gets_timm_groups_with_its_projection_at_the_head() -> None:
    ids, depth = layer_ids(create_model("test/Swin-B").visual)
    assert ids["trunk.patch_embed.proj.weight"] == 0 and ids["head.proj.weight"] == depth + 1
    assert sorted(set(ids.values())) == list(range(depth + 2))
