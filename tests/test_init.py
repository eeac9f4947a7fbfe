"""Member 1 from a model that already exists (`[[chain]] init = PATH`): used as it is (epochs = 0) or trained
further, for CLIP (compt or plain open_clip checkpoints) and language models (compt checkpoints or Hugging Face
folders); priced at its own (continued) training, with the family acceleration also counting its training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import assert_same_finals, crash_after_step

from compt.chain import train_run
from compt.checkpoint import load_checkpoint, save_checkpoint
from compt.clip.models import create_model, get_model_config
from compt.config import config_from_dict, validate
from compt.errors import UserError
from compt.plan import format_plan, plan_chain
from compt.report import write_report

DATA = {"kind": "synthetic", "num_samples": 48, "eval_samples": 24, "probe_samples": 0}
TRAIN = {"batch_size": 16, "warmup_steps": 1, "stage_warmup_steps": 1, "lr": 2e-3, "min_lr": 1e-5}


def pretrained(path: Path, model: str = "test/A", plain: bool = False) -> Path:
    torch.manual_seed(5)
    state = create_model(model).state_dict()
    if plain:
        torch.save(state, path)
        return path
    return save_checkpoint(path, state_dict=state, model_config=get_model_config(model), lineage={})


def config(init: Path, epochs: float) -> dict:
    return {"name": "init", "baseline_epochs": 1, "baselines": True, "data": DATA, "train": TRAIN,
            "chain": [{"model": "test/A", "epochs": epochs, "init": str(init)},
                      {"model": "test/B", "epochs": 1, "growth": "preserve"}]}


def test_member_1_used_as_it_is_costs_nothing_and_seeds_the_chain(tmp_path: Path) -> None:
    source = pretrained(tmp_path / "a.pt")
    cfg = config_from_dict(config(source, 0))
    validate(cfg)
    plan = plan_chain(cfg)
    assert plan.members[0].stage_cost == 0 and plan.acceleration > plan.acceleration_counting_init > 0
    assert "counting its training from scratch too" in format_plan(plan, "init")
    results = train_run(cfg, tmp_path / "run", progress=False)
    first = results["chain-1"]
    assert first["steps"] == 0 and first["train_flops"] == 0 and [h["step"] for h in first["history"]] == [0]
    kept = load_checkpoint(tmp_path / "run/chain/01-test_A/final.pt").state_dict
    want = load_checkpoint(source).state_dict
    assert all(torch.equal(kept[k], want[k]) for k in want)
    assert set(results) == {"chain-1", "chain-2", "baseline-1", "baseline-2"}   # member 1's own baseline too
    md = write_report([tmp_path / "run"])[1]
    assert "member 1 starts from an existing checkpoint" in md


def test_member_1_from_a_plain_open_clip_file_trains_further_and_resumes(tmp_path: Path, monkeypatch) -> None:
    source = pretrained(tmp_path / "a.bin", plain=True)
    cfg = config_from_dict(config(source, 2) | {"baselines": False})
    reference = train_run(cfg, tmp_path / "ref", progress=False)
    assert reference["chain-1"]["steps"] == 6
    crash_after_step(monkeypatch, "test/A", 3)   # an epoch end: checkpointed, then killed
    with pytest.raises(RuntimeError, match="killed"):
        train_run(cfg, tmp_path / "run", progress=False)
    monkeypatch.undo()
    train_run(cfg, tmp_path / "run", progress=False)
    assert_same_finals(tmp_path / "run", tmp_path / "ref")


@pytest.mark.parametrize(("edit", "match"), [
    (lambda r, p: r["chain"][1].update(init=str(p)), "init starts member 1 from a checkpoint"),
    (lambda r, p: r["chain"][0].update(init="/no/such.pt"), "init /no/such.pt does not exist"),
    (lambda r, p: r["chain"][0].pop("init"), "epochs must be positive \\(0 only with init"),
])
def test_bad_init_settings_are_one_line(tmp_path: Path, edit, match: str) -> None:
    raw = config(pretrained(tmp_path / "a.pt"), 0)
    edit(raw, tmp_path / "a.pt")
    with pytest.raises(UserError, match=match):
        validate(config_from_dict(raw))


def test_an_init_of_another_shape_is_refused(tmp_path: Path) -> None:
    source = pretrained(tmp_path / "b.pt", model="test/B")
    with pytest.raises(UserError, match="holds a test/B model, not test/A"):
        train_run(config_from_dict(config(source, 0)), tmp_path / "run", progress=False)


def test_language_model_member_1_from_a_hugging_face_folder(tmp_path: Path) -> None:
    from compt.lm.models import create_lm, export_pretrained, get_lm_config

    torch.manual_seed(3)
    folder = export_pretrained(get_lm_config("lm/test-A"), create_lm("lm/test-A").state_dict(), tmp_path / "hf-a")
    corpus = tmp_path / "t.txt"
    corpus.write_text("".join(f"x{i} = {i} * {i % 7}\n" for i in range(400)))
    raw = {"name": "lm-init", "baselines": False, "data": {"kind": "text", "path": str(corpus), "num_samples": 32,
                                                           "eval_samples": 8},
           "train": TRAIN | {"batch_size": 8},
           "chain": [{"model": "lm/test-A", "epochs": 1, "init": str(folder)},
                     {"model": "lm/test-B", "epochs": 1, "growth": "preserve"}]}
    results = train_run(config_from_dict(raw), tmp_path / "run", progress=False)
    assert results["chain-1"]["steps"] == 4 and "val_loss" in results["chain-2"]["metrics"]
    wrong = export_pretrained(get_lm_config("lm/test-B"), create_lm("lm/test-B").state_dict(), tmp_path / "hf-b")
    raw["chain"][0]["init"] = str(wrong)
    with pytest.raises(UserError, match="is not a lm/test-A: hidden_size 24 \\(the member has 16\\)"):
        train_run(config_from_dict(raw), tmp_path / "run2", progress=False)
