"""SigLIP objective: the loss against a naive reference, the logit bias in model, task, growth and a chain run."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from helpers import ToyPairs

from compt.chain import train_run
from compt.clip.growth import grow
from compt.clip.losses import multi_caption_siglip_loss, siglip_loss
from compt.clip.models import create_model, get_model_config
from compt.clip.siglip import INIT_LOGIT_BIAS, model_for_objective
from compt.clip.tasks import build_task, encode
from compt.config import config_from_dict, validate
from compt.errors import UserError
from compt.report import write_report

RAW = {"name": "s", "baseline_epochs": 1, "baselines": True,
       "data": {"kind": "synthetic", "num_samples": 32, "eval_samples": 16},
       "train": {"batch_size": 16, "warmup_steps": 1, "stage_warmup_steps": 1, "objective": "siglip"},
       "chain": [{"model": "test/A", "epochs": 1},
                 {"model": "test/B", "epochs": 1, "growth": "preserve", "distill": "fd"}]}


def siglip_cfg(name: str):
    return model_for_objective(get_model_config(name), "siglip")


def test_siglip_loss_matches_naive_reference():
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    txt = F.normalize(torch.randn(5, 3, 8, generator=g), dim=-1)
    s, b = torch.tensor(7.0), torch.tensor(-3.0)

    def naive(t):
        total = 0.0
        for i in range(5):
            for j in range(5):
                z = s * img[i] @ t[j] + b
                total -= torch.log(torch.sigmoid(z if i == j else -z))
        return total / 5

    assert torch.allclose(siglip_loss(img, txt[:, 0], s, b), naive(txt[:, 0]), atol=1e-5)
    assert torch.allclose(multi_caption_siglip_loss(img, txt, s, b),
                          sum(naive(txt[:, k]) for k in range(3)) / 3, atol=1e-5)


def test_siglip_model_task_and_gradient():
    cfg = siglip_cfg("test/A")
    torch.manual_seed(0)
    model = create_model(cfg)
    assert model.logit_bias.item() == INIT_LOGIT_BIAS and cfg.to_open_clip()["init_logit_bias"] == INIT_LOGIT_BIAS
    ds = ToyPairs(8, captions=2)
    task = build_task(model, objective="siglip")
    out = task(ds.images, ds.tokens, torch.arange(8))
    assert out["logit_bias"] == INIT_LOGIT_BIAS and set(out) == {"loss", "clip_loss", "logit_scale", "logit_bias"}
    out["loss"].backward()
    assert model.logit_bias.grad.abs() > 0
    assert len(encode(model, ds.images, ds.tokens)) == 3  # teacher-cache / eval path unchanged


@pytest.mark.parametrize("op", ["preserve", "corner", "stack"])
def test_growth_carries_logit_bias(op):
    parent_cfg, child_cfg = siglip_cfg("test/A"), siglip_cfg("test/C")
    torch.manual_seed(0)
    state = create_model(parent_cfg).state_dict()
    state["logit_bias"] = torch.tensor(-4.5)
    child = grow(state, parent_cfg, child_cfg, op)
    assert child["logit_bias"] == -4.5 and child["logit_scale"] == state["logit_scale"]
    with pytest.raises(UserError, match="logit bias"):
        grow(state, parent_cfg, get_model_config("test/C"), op)


def test_unknown_objective_is_refused():
    raw = copy.deepcopy(RAW)
    raw["train"]["objective"] = "sigmoid"
    with pytest.raises(UserError, match="unknown training objective 'sigmoid'"):
        validate(config_from_dict(raw))


def test_siglip_chain_runs_and_records_the_bias(tmp_path):
    cfg = config_from_dict(RAW)
    validate(cfg)
    results = train_run(cfg, tmp_path, progress=False)
    assert set(results) == {"chain-1", "chain-2", "baseline-2"}
    final = torch.load(tmp_path / "chain/02-test_B/final.pt", weights_only=True)
    assert "logit_bias" in final["state_dict"] and final["model_config"]["init_logit_bias"] == INIT_LOGIT_BIAS
    init = torch.load(tmp_path / "chain/02-test_B/init.pt", weights_only=True)["state_dict"]
    parent = torch.load(tmp_path / "chain/01-test_A/final.pt", weights_only=True)["state_dict"]
    assert init["logit_bias"] == parent["logit_bias"] != INIT_LOGIT_BIAS
    records = [json.loads(line) for line in (tmp_path / "chain/02-test_B/metrics.jsonl").read_text().splitlines()]
    assert any("logit_bias" in r for r in records if r.get("kind") == "train")
    out, md = write_report([tmp_path])
    assert "test/B" in md and (out / "report.json").is_file()


def test_compt_grow_keeps_the_siglip_bias(tmp_path):
    from compt.checkpoint import load_checkpoint, save_checkpoint
    from compt.cli import main

    parent_cfg = siglip_cfg("test/A")
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "p.pt", state_dict=create_model(parent_cfg).state_dict(), model_config=parent_cfg)
    assert main(["grow", "--from", str(tmp_path / "p.pt"), "--to", "test/B", "--op", "preserve",
                 "--out", str(tmp_path / "c.pt")]) == 0
    child = load_checkpoint(tmp_path / "c.pt")
    assert child.model_config.init_logit_bias == INIT_LOGIT_BIAS and child.state_dict["logit_bias"] == INIT_LOGIT_BIAS
