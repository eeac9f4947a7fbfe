"""Shrink and perturb on a grown member's init: the formula on tensors, the chain's init.pt, validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compt.chain import fresh_state, train_run
from compt.checkpoint import load_checkpoint
from compt.clip.models import get_model_config
from compt.config import config_from_dict, validate
from compt.errors import UserError
from compt.paradigm import paradigm_named
from compt.perturb import FRESH_SEED_OFFSET, shrink_perturb


def test_shrink_perturb_is_the_formula_and_keeps_scalars() -> None:
    grown = {"w": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "scale": torch.tensor(2.5), "ids": torch.tensor([1, 2])}
    fresh = {"w": torch.tensor([[10.0, 0.0], [0.0, -10.0]]), "scale": torch.tensor(9.0), "ids": torch.tensor([7, 7])}
    out = shrink_perturb(grown, fresh, shrink=0.5, perturb=0.1)
    torch.testing.assert_close(out["w"], torch.tensor([[1.5, 1.0], [1.5, 1.0]]))
    assert out["scale"].item() == 2.5 and out["ids"].tolist() == [1, 2]
    assert shrink_perturb(grown, fresh, shrink=1.0, perturb=0.0) is grown
    with pytest.raises(ValueError, match="differ in keys"):
        shrink_perturb(grown, {"w": fresh["w"]}, shrink=0.5, perturb=0.1)


RAW = {"name": "sp", "data": {"num_samples": 64, "eval_samples": 32, "probe_samples": 0},
       "train": {"batch_size": 32, "warmup_steps": 1, "stage_warmup_steps": 1, "lr": 2e-3, "min_lr": 1e-5},
       "chain": [{"model": "test/A", "epochs": 1},
                 {"model": "test/B", "epochs": 1, "growth": "preserve", "shrink": 0.6, "perturb": 0.05}]}


def test_a_grown_member_starts_from_the_shrunk_and_perturbed_growth(tmp_path: Path) -> None:
    from compt.clip.growth import grow

    cfg = config_from_dict(RAW)
    validate(cfg)
    train_run(cfg, tmp_path, progress=False)
    init = load_checkpoint(tmp_path / "chain/02-test_B/init.pt")
    parent = load_checkpoint(tmp_path / "chain/01-test_A/final.pt")
    b = get_model_config("test/B")
    grown = grow(parent.state_dict, get_model_config("test/A"), b, "preserve", 0)
    fresh = fresh_state(paradigm_named("clip"), b, FRESH_SEED_OFFSET)
    for k, v in init.state_dict.items():
        want = grown[k] if v.ndim == 0 else 0.6 * grown[k] + 0.05 * fresh[k]
        torch.testing.assert_close(v, want, msg=k)
    assert (init.lineage["shrink"], init.lineage["perturb"]) == (0.6, 0.05)


@pytest.mark.parametrize(("member", "match"), [
    ({"shrink": 0.0}, "shrink must be in \\(0, 1\\]"),
    ({"shrink": 1.5}, "shrink must be in \\(0, 1\\]"),
    ({"perturb": -0.1}, "perturb must not be negative"),
    ({"growth": "none"}, "not grown \\(its growth is none\\)"),
])
def test_bad_shrink_perturb_settings_are_one_line(member: dict, match: str) -> None:
    raw = {**RAW, "chain": [RAW["chain"][0], {**RAW["chain"][1], **member}]}
    with pytest.raises(UserError, match=match):
        validate(config_from_dict(raw))
    first = {**RAW, "chain": [{**RAW["chain"][0], "shrink": 0.5}, RAW["chain"][1]]}
    with pytest.raises(UserError, match="first member trains from scratch"):
        validate(config_from_dict(first))
