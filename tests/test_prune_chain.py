"""Down-chains end to end at test size (CLIP from an init, Llama with baselines → plan and report) and `compt prune`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from compt.chain import train_run
from compt.checkpoint import load_checkpoint, save_checkpoint
from compt.cli import main
from compt.clip.models import create_model, get_model_config
from compt.clip.prune import prune_clip
from compt.config import config_from_dict, validate
from compt.lm.models import create_lm, get_lm_config
from compt.lm.prune import prune_lm
from compt.plan import format_plan, plan_chain
from compt.report import write_report

TEXT = "".join(f"def f{i}(x):\n    return x * {i} + {i % 7}  # line {i}\n" for i in range(300))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    (root / "a.txt").write_text(TEXT)
    return root


def test_a_clip_down_chain_from_an_init_prunes_distils_and_plans(tmp_path: Path) -> None:
    big = tmp_path / "big.pt"
    save_checkpoint(big, state_dict=create_model("test/C").state_dict(), model_config=get_model_config("test/C"))
    cfg = config_from_dict({
        "name": "down", "baseline_epochs": 1, "data": {"kind": "synthetic", "num_samples": 32, "eval_samples": 16},
        "train": {"batch_size": 16, "warmup_steps": 1, "stage_warmup_steps": 1, "lr": 2e-3},
        "chain": [{"model": "test/C", "epochs": 0, "init": str(big)},
                  {"model": "test/B", "epochs": 1, "growth": "prune", "distill": "fd"}]})
    validate(cfg)
    train_run(cfg, tmp_path / "run", progress=False)
    stage = tmp_path / "run" / "chain" / "02-test_B"
    init, record = load_checkpoint(stage / "init.pt"), json.loads((stage / "prune.json").read_text())
    assert init.lineage["operator"] == "prune" and init.lineage["prune_record"] == "prune.json"
    assert record["calibration_samples"] == 32 and set(record["importance"]) >= {"embed", "vision.heads"}
    parent = load_checkpoint(tmp_path / "run" / "chain" / "01-test_C" / "final.pt")
    want = prune_clip(parent.state_dict, parent.model_config, init.model_config, record["kept"])
    assert all(torch.equal(want[k], init.state_dict[k]) for k in want)   # the record says what was kept
    assert json.loads((stage / "result.json").read_text())["metrics"]["train_fd_image"] > 0
    plan = plan_chain(cfg)
    assert plan.largest_individual == plan.members[0].individual_cost > plan.members[1].individual_cost
    assert "of training test/C alone" in format_plan(plan, "down")


def test_a_language_model_down_chain_trains_and_reports_against_the_largest_member(tmp_path: Path,
                                                                                    corpus: Path) -> None:
    cfg = config_from_dict({
        "name": "lmdown", "baselines": True,
        "data": {"kind": "text", "path": str(corpus), "num_samples": 24, "eval_samples": 8},
        "train": {"batch_size": 8, "warmup_steps": 1, "stage_warmup_steps": 1, "lr": 3e-3},
        "chain": [{"model": "lm/test-C", "epochs": 1},
                  {"model": "lm/test-A", "epochs": 1, "growth": "prune", "distill": "kl"}]})
    validate(cfg)
    train_run(cfg, tmp_path / "run", progress=False)
    stage = tmp_path / "run" / "chain" / "02-lm_test-A"
    record = json.loads((stage / "prune.json").read_text())
    parent = load_checkpoint(tmp_path / "run" / "chain" / "01-lm_test-C" / "final.pt")
    init = load_checkpoint(stage / "init.pt")
    want = prune_lm(parent.state_dict, parent.model_config, init.model_config, record["kept"])
    assert all(torch.equal(want[k], init.state_dict[k]) for k in want)
    assert len(record["kept"]["groups"][0]) == 1 and len(record["kept"]["layers"]) == 2
    summary = json.loads((write_report([tmp_path / "run"], tmp_path / "report")[0] / "report.json").read_text())
    family = summary["family"]
    costs = {s["model"]: s["flops"]["mean"] for s in summary["members"] if s["method"] == "individual"}
    chain = family["chain_flops"]["mean"]
    assert family["chain_pct_of_largest"]["mean"] == pytest.approx(100 * chain / costs["lm/test-C"], rel=1e-6)


def test_compt_prune_writes_a_checkpoint_its_record_and_library_folders(tmp_path: Path, corpus: Path) -> None:
    big = tmp_path / "c.pt"
    state = create_lm("lm/test-C").state_dict()
    save_checkpoint(big, state_dict=state, model_config=get_lm_config("lm/test-C"))
    out = tmp_path / "small" / "a.pt"
    assert main(["prune", "--from", str(big), "--to", "lm/test-A", "--out", str(out), "--data-path", str(corpus),
                 "--samples", "16", "--seed", "2"]) == 0
    ckpt, record = load_checkpoint(out), json.loads((tmp_path / "small" / "a.prune.json").read_text())
    assert ckpt.lineage["operator"] == "prune" and ckpt.lineage["calibration"]["samples"] == 16
    assert ckpt.lineage["parent_sha256"] and record["seed"] == 2 and record["kept"]["layers"]
    from transformers import AutoModelForCausalLM

    ids = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        hf = AutoModelForCausalLM.from_pretrained(tmp_path / "small" / "a-hf").eval()(input_ids=ids).logits
        ours = create_lm(ckpt.model_config, state_dict=ckpt.state_dict).eval()(input_ids=ids).logits
    assert torch.allclose(hf, ours, atol=1e-5)
    from transformers import AutoTokenizer  # the calibration tokenizer (bytes, the loose parent's) travels along

    assert ckpt.lineage["tokenizer"]["kind"] == "byte"
    assert AutoTokenizer.from_pretrained(tmp_path / "small" / "a-hf").eos_token_id == 256

    clip_big = tmp_path / "clip.pt"
    save_checkpoint(clip_big, state_dict=create_model("test/C").state_dict(), model_config=get_model_config("test/C"))
    clip_out = tmp_path / "clip" / "b.pt"
    assert main(["prune", "--from", str(clip_big), "--to", "test/B", "--out", str(clip_out), "--samples", "8"]) == 0
    import open_clip

    model = open_clip.create_model(f"local-dir:{clip_out.parent}")
    model.load_state_dict(load_checkpoint(clip_out).state_dict)
    assert json.loads((tmp_path / "clip" / "b.prune.json").read_text())["calibration"]["samples"] == 8
