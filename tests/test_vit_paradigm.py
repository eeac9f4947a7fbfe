"""The ViT classification paradigm (`compt.vit`): a third paradigm in its own folder, found through the entry-point
group ``compt.paradigms``, trained as a chain by the core, exported to timm.

Tiny: `vit-test` sizes (16×16 images, widths 16/32), a few steps on synthetic coloured shapes.
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import crash_after_step

from compt import paradigm as registry
from compt.checkpoint import load_checkpoint
from compt.config import config_from_dict, validate
from compt.errors import UserError
from compt.vit.flops import vit_forward_flops, vit_params
from compt.vit.growth import grow_vit, stream_map
from compt.vit.losses import feature_mse_loss, logit_kl_loss
from compt.vit.models import build_vit, export_timm, get_vit_config, list_vit_models, load_exported

RAW = {"name": "vit", "baseline_epochs": 3, "baselines": True,
       "data": {"kind": "synthetic", "num_samples": 40, "eval_samples": 20},
       "train": {"batch_size": 10, "lr": 3e-3, "min_lr": 1e-4, "warmup_steps": 2, "stage_warmup_steps": 1,
                 "log_every_steps": 1, "loader_workers": 0},
       "chain": [{"model": "vit-test/A", "epochs": 3},
                 {"model": "vit-test/B", "epochs": 1, "growth": "preserve", "distill": "kl+feature",
                  "distill_weight": 0.5}]}


@pytest.fixture
def vit(monkeypatch) -> Any:
    """The paradigm as an installed package's metadata lists it (the entry point in pyproject.toml)."""
    eps = [importlib.metadata.EntryPoint("vit", "compt.vit.paradigm:PARADIGM", registry.ENTRY_POINTS)]
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda **kw: eps if kw.get("group") == registry.ENTRY_POINTS else real(**kw))
    monkeypatch.setattr(registry, "_PLUGINS", [])
    yield   # vit stays registered: the package's own metadata lists it too


def perturbed(name: str, seed: int = 0) -> tuple[Any, torch.nn.Module]:
    """A model of `name` with every parameter moved off its init (non-zero biases, non-unit gains)."""
    cfg = get_vit_config(name)
    torch.manual_seed(seed)
    model = build_vit(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return cfg, model.eval()


def test_the_pyproject_names_the_entry_point() -> None:
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '[project.entry-points."compt.paradigms"]\nvit = "compt.vit.paradigm:PARADIGM"' in text


@pytest.mark.parametrize("name", list_vit_models())
def test_analytic_params_match_the_model(name: str) -> None:
    cfg = get_vit_config(name)
    with torch.device("meta"):
        model = build_vit(cfg)
    assert vit_params(cfg) == sum(p.numel() for p in model.parameters())


def test_forward_flops_match_torch_flop_counter() -> None:
    from timm.layers import set_fused_attn, use_fused_attn
    from torch.utils.flop_counter import FlopCounterMode

    cfg = get_vit_config("vit-test/B")
    fused = use_fused_attn()
    set_fused_attn(False)   # attention as explicit matmuls, which the counter sees
    try:
        model = build_vit(cfg).eval()
    finally:
        set_fused_attn(fused)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, cfg.img_size, cfg.img_size))
    assert vit_forward_flops(cfg) == pytest.approx(counter.get_total_flops(), rel=1e-6)
    assert vit_params(get_vit_config("deit/Ti")) == pytest.approx(5.72e6, rel=1e-3)   # DeiT-Ti's 5.7M


@pytest.mark.parametrize(("parent", "child"), [("vit-test/A", "vit-test/B"), ("vit-test/B", "vit-test/C"),
                                               ("vit-test/A", "vit-test/C")])
def test_preserve_growth_computes_the_parents_logits(parent: str, child: str) -> None:
    pc, p = perturbed(parent)
    cc = get_vit_config(child)
    grown = build_vit(cc)
    grown.load_state_dict(grow_vit(p.state_dict(), pc, cc, "preserve", seed=1))
    x = torch.randn(6, 3, pc.img_size, pc.img_size)
    with torch.no_grad():
        torch.testing.assert_close(grown.eval()(x), p(x), atol=1e-5, rtol=0)


def test_after_one_step_every_parameter_of_a_grown_child_has_a_gradient() -> None:
    pc, p = perturbed("vit-test/A")
    cc = get_vit_config("vit-test/C")   # wider, two identity blocks inserted
    child = build_vit(cc)
    child.load_state_dict(grow_vit(p.state_dict(), pc, cc, "preserve", seed=1))
    opt = torch.optim.AdamW(child.train().parameters(), lr=1e-3)
    x, y = torch.randn(8, 3, 16, 16), torch.arange(8)
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(child(x), y).backward()
        opt.step()
    assert all(q.grad.abs().max() > 0 for q in child.parameters())


def test_the_stream_map_keeps_every_tokens_mean_and_variance() -> None:
    e, s = stream_map(4, 7), torch.randn(5, 4)
    torch.testing.assert_close((s @ e.T).mean(-1), s.mean(-1))
    torch.testing.assert_close((s @ e.T).var(-1, unbiased=False), s.var(-1, unbiased=False))


def test_growth_refuses_a_pair_it_cannot_preserve() -> None:
    a, deit = get_vit_config("vit-test/B"), get_vit_config("deit/Ti")
    with pytest.raises(UserError, match="img_size differs"):
        grow_vit(build_vit(a).state_dict(), a, deit, "preserve", 0)
    with pytest.raises(UserError, match="smaller"):
        grow_vit(build_vit(a).state_dict(), a, get_vit_config("vit-test/A"), "preserve", 0)


def test_the_losses_against_naive_references() -> None:
    s, t, tau = torch.randn(4, 5), torch.randn(4, 5), 2.0
    p, q = (t / tau).softmax(-1), (s / tau).softmax(-1)
    want = tau**2 * (p * (p.log() - q.log())).sum(-1).mean()
    torch.testing.assert_close(logit_kl_loss(s, t, tau), want)
    a, b = torch.randn(3, 6), torch.randn(3, 6)
    torch.testing.assert_close(feature_mse_loss(a, b), ((a - b) ** 2).mean())


def test_the_distillation_task_adds_kl_and_projected_feature_mse() -> None:
    from compt.vit.task import build_vit_task, forward_vit

    (sc, student), (tc, teacher) = perturbed("vit-test/B", 1), perturbed("vit-test/A", 2)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    task = build_vit_task(student.train(), distill="kl+feature", weight=0.5, teacher=teacher,
                          student_dim=sc.width, teacher_dim=tc.width, temperature=2.0)
    with torch.no_grad():
        task.proj.weight.add_(0.3 * torch.randn_like(task.proj.weight))
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 3, 5, 9])
    out = task(x, y)
    out["loss"].backward()
    got = [p.grad.clone() for p in student.parameters()]
    student.zero_grad()
    s_logits, s_feats = forward_vit(student, x)
    t_logits, t_feats = forward_vit(teacher, x)
    want = (torch.nn.functional.cross_entropy(s_logits, y) + 0.5 * (logit_kl_loss(s_logits, t_logits, 2.0)
            + feature_mse_loss(task.proj(s_feats), t_feats)))
    want.backward()
    torch.testing.assert_close(out["loss"], want)
    for g, p in zip(got, student.parameters(), strict=True):   # the feature term reaches the student too
        torch.testing.assert_close(g, p.grad)
    assert task.proj.weight.grad.abs().sum() > 0 and set(task.extra_state()) == {"proj.weight"}
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())   # the teacher is frozen


def test_a_vit_chain_trains_with_distillation_baselines_and_a_report(vit: Any, tmp_path: Path, capsys) -> None:
    from compt.chain import train_run
    from compt.cli import main

    assert "vit" not in registry.BUILTIN   # found through the entry point, not built in
    cfg = config_from_dict(RAW)
    validate(cfg)
    assert cfg.paradigm.name == "vit"
    results = train_run(cfg, tmp_path, progress=False)
    assert list(results) == ["chain-1", "chain-2", "baseline-2"]
    assert results["chain-1"]["metrics"]["top1"] > 10.0   # above chance on 10 classes after 12 steps
    assert results["chain-2"]["metrics"]["train_kl"] >= 0 and results["chain-2"]["metrics"]["train_feature_mse"] >= 0
    parent = load_checkpoint(tmp_path / "chain/01-vit-test_A/final.pt")
    grown = load_checkpoint(tmp_path / "chain/02-vit-test_B/init.pt")
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():   # the grown member starts as its parent's function
        torch.testing.assert_close(cfg.paradigm.create(grown.model_config, grown.state_dict).eval()(x),
                                   cfg.paradigm.create(parent.model_config, parent.state_dict).eval()(x),
                                   atol=1e-5, rtol=0)
    diag = results["chain-2"]["diagnostics"]   # exact growth: the parent's features at step 0
    assert diag["cka_features_start"] == pytest.approx(1.0, abs=1e-4) and diag["update_norm"] > 0
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "top-1 accuracy" in out and "vit-test/B" in out
    final = load_checkpoint(tmp_path / "chain/02-vit-test_B/final.pt")
    assert main(["export", str(tmp_path / "chain/02-vit-test_B/final.pt"), "--out", str(tmp_path / "timm")]) == 0
    model = load_exported(tmp_path / "timm")   # timm.create_model(architecture, checkpoint_path=…, **model_args)
    assert json.loads((tmp_path / "timm/config.json").read_text())["model_args"]["embed_dim"] == 32
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), cfg.paradigm.create(final.model_config, final.state_dict)
                                   .eval()(x), atol=0, rtol=0)


def test_a_killed_vit_stage_resumes_to_the_same_result(vit: Any, tmp_path: Path, monkeypatch, capsys) -> None:
    from compt.chain import train_run

    cfg = config_from_dict(RAW | {"baselines": False, "train": RAW["train"] | {"ckpt_every_steps": 2}})
    reference = train_run(cfg, tmp_path / "ref", progress=False)
    crash_after_step(monkeypatch, "vit-test/B", 3)
    with pytest.raises(RuntimeError, match="killed"):
        train_run(cfg, tmp_path / "run", progress=False)
    monkeypatch.undo()
    capsys.readouterr()
    resumed = train_run(cfg, tmp_path / "run", progress=False)
    assert "resuming chain-2 (vit-test/B) at step 2 of 4" in capsys.readouterr().err   # with its projection
    for key in reference:
        assert resumed[key]["metrics"] == reference[key]["metrics"]
    got = load_checkpoint(tmp_path / "run/chain/02-vit-test_B/final.pt").state_dict
    want = load_checkpoint(tmp_path / "ref/chain/02-vit-test_B/final.pt").state_dict
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_the_models_are_listed_with_their_cost(vit: Any, capsys) -> None:
    from compt.cli import main

    assert main(["models", "--family", "deit", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["vit_models"]
    assert [r["model"] for r in rows] == ["deit/Ti", "deit/S", "deit/B"]
    assert rows[0]["gflops"] == pytest.approx(vit_forward_flops(get_vit_config("deit/Ti")) / 1e9)
    assert main(["flops", "vit-tiny/M"]) == 0


def test_export_writes_what_timm_create_model_loads(tmp_path: Path) -> None:
    cfg, model = perturbed("vit-test/A")
    export_timm(cfg, model.state_dict(), tmp_path)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(load_exported(tmp_path).eval()(x), model(x), atol=0, rtol=0)


def test_imagefolder_data_is_read_carved_and_checked(vit: Any, tmp_path: Path) -> None:
    from PIL import Image

    from compt.vit.data import ViTData

    for c in range(10):
        (tmp_path / "imgs" / f"c{c}").mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20, 20), (25 * c, i * 80, 0)).save(tmp_path / "imgs" / f"c{c}" / f"{i}.png")
    raw = RAW | {"data": {"kind": "folder", "path": str(tmp_path / "imgs"), "eval_samples": 5},
                 "chain": [RAW["chain"][0], RAW["chain"][1] | {"target": {"top1": 50.0}}]}
    cfg = config_from_dict(raw)
    validate(cfg)
    data = ViTData(cfg.data, carve_validation=True)
    a = get_vit_config("vit-test/A")
    train, held, val = data.train_set(a), data.splits(a)[1], data.splits(a)[2]
    assert (len(train), len(held), len(val)) == (20, 5, 5)
    names = [set(d.files) for d in (train, held, val)]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert len({label for _, label in held.files}) >= 3   # carved by a hash, not the first files in path order
    assert ViTData(cfg.data, carve_validation=True).train_set(a).files == train.files   # deterministic
    image, label, _ = train[0]
    assert image.shape == (3, 16, 16) and image.min() >= -1 and image.max() <= 1
    assert 0 <= data.evaluator(a)(build_vit(a))["top1"] <= 100
    (tmp_path / "imgs" / "extra").mkdir()
    with pytest.raises(UserError, match="has 11 classes, the members classify 10"):
        ViTData(cfg.data, carve_validation=True).train_set(a)   # as a stage opens its data, before it trains


def write_idx(path: Path, array: Any) -> None:
    """An IDX file (gzip) of a uint8 array, as Fashion-MNIST ships it."""
    import gzip

    import numpy as np

    a = np.asarray(array, dtype=np.uint8)
    head = bytes([0, 0, 8, a.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in a.shape)
    with gzip.open(path, "wb") as f:
        f.write(head + a.tobytes())


def test_fashion_mnist_is_read_from_its_idx_files(vit: Any, tmp_path: Path) -> None:
    from compt.vit.data import ViTData

    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 30), ("t10k", 12)):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", torch.randint(0, 256, (n, 28, 28), generator=g))
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", torch.arange(n) % 10)
    raw = RAW | {"data": {"kind": "fashion-mnist", "path": str(tmp_path), "num_samples": 20, "eval_samples": 8,
                          "val_samples": 6},
                 "chain": [RAW["chain"][0], RAW["chain"][1] | {"until": "baseline"}]}
    cfg = config_from_dict(raw)
    validate(cfg)
    train, held, val = ViTData(cfg.data, carve_validation=cfg.paradigm.chain_rules(cfg).carves_validation).splits(
        get_vit_config("vit-test/A"))
    assert (len(train), len(held), len(val)) == (20, 8, 6)
    assert train.images.shape == (20, 3, 16, 16) and train.images.min() >= -1 and train.images.max() <= 1
    rows = {tuple(x.flatten()[:20].tolist()) for x in train.images} & {tuple(x.flatten()[:20].tolist())
                                                                       for x in val.images}
    assert not rows   # validation images are never trained on
    assert held.labels.tolist() == [i % 10 for i in range(8)]   # the first images of t10k
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte.*not found"):
        ViTData(cfg.data, carve_validation=True).train_set(get_vit_config("vit-test/A"))
    with pytest.raises(UserError, match="eval_path and data.val_path are image folders"):
        validate(config_from_dict(raw | {"data": raw["data"] | {"val_path": "x"}}))


def test_the_vit_paradigm_imports_no_other_paradigm_and_compt_does_not_import_it() -> None:
    import ast
    import subprocess
    import sys

    src = Path(__file__).resolve().parents[1] / "src" / "compt" / "vit"
    for path in src.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not [n for n in names if n.startswith(("compt.clip", "compt.lm"))], path.name
    code = "import sys, compt, compt.chain, compt.config; print(any(m.startswith('compt.vit') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_the_documented_deit_chain_plans(vit: Any, tmp_path: Path, capsys) -> None:
    import re

    from compt.cli import main

    page = (Path(__file__).resolve().parents[1] / "docs" / "vit.md").read_text()
    (tmp_path / "deit.toml").write_text(re.search(r"```toml\n(.*?)```", page, re.S).group(1))
    assert main(["plan", str(tmp_path / "deit.toml"), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [m["model"] for m in plan["members"]] == ["deit/Ti", "deit/S", "deit/B"] and plan["acceleration"] > 1
