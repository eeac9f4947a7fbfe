"""Moving a grown member's init away from its parent: shrink and perturb, noise at a set SNR, and the order the
options apply in (`compt.chain.escape_parent`) — the formulas on tensors, the chain's init.pt, validation and
the settings fingerprint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from compt.chain import escape_parent, fingerprint, fresh_state, plan_stages, stage_changes, stage_spec, train_run
from compt.checkpoint import load_checkpoint
from compt.clip.models import get_model_config
from compt.config import config_from_dict, validate
from compt.errors import UserError
from compt.paradigm import paradigm_named
from compt.perturb import FRESH_SEED_OFFSET, noise_seed, shrink_perturb, snr_noise


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


# ----------------------------------------------------------------------------------------------- SNR noise
def test_snr_noise_has_the_set_snr_and_keeps_shapes_and_small_tensors() -> None:
    w = 3.0 * torch.randn(512, 512, generator=torch.Generator().manual_seed(1))
    state = {"w": w, "conv": torch.randn(8, 3, 4, 4), "gain": torch.ones(8), "scale": torch.tensor(2.5),
             "zero": torch.zeros(4, 4), "ids": torch.ones(2, 2, dtype=torch.long)}
    out = snr_noise(state, 10.0, torch.Generator().manual_seed(0))
    assert {k: v.shape for k, v in out.items()} == {k: v.shape for k, v in state.items()}
    noise = out["w"] - w
    measured = 10 * torch.log10(w.pow(2).mean() / noise.pow(2).mean())
    assert abs(float(measured) - 10.0) < 0.05, measured
    assert abs(float(noise.mean())) < 0.01                         # zero-mean Gaussian
    assert not torch.equal(out["conv"], state["conv"])             # every tensor of ≥ 2 dims gets noise
    for key in ("gain", "scale", "ids"):                           # norms, biases, scalars, integers: as they are
        assert out[key] is state[key]
    assert torch.equal(out["zero"], state["zero"])                 # σ² = mean(W²) / 10^(snr/10) = 0
    again = snr_noise(state, 10.0, torch.Generator().manual_seed(0))
    assert all(torch.equal(out[k], again[k]) for k in state)       # deterministic in the seed
    other = snr_noise(state, 10.0, torch.Generator().manual_seed(1))
    assert not torch.equal(out["w"], other["w"])
    louder = snr_noise(state, 0.0, torch.Generator().manual_seed(0))["w"] - w
    assert abs(float(10 * torch.log10(w.pow(2).mean() / louder.pow(2).mean()))) < 0.05


def test_snr_noise_keeps_a_tied_head_tied() -> None:
    emb = torch.randn(10, 4)
    out = snr_noise({"embed": emb, "head": emb, "other": emb.clone()}, 10.0, torch.Generator().manual_seed(0))
    assert out["embed"] is out["head"] and not torch.equal(out["embed"], out["other"])


def test_noise_seed_differs_per_member_and_train_seed() -> None:
    seeds = {noise_seed(s, m) for s in range(3) for m in range(5)}
    assert len(seeds) == 15 and noise_seed(0, 1) not in (0, 1, FRESH_SEED_OFFSET)


# ----------------------------------------------------------------------------------------------- escape order
def _spec(member: dict, raw: dict = RAW) -> tuple:
    cfg = config_from_dict({**raw, "chain": [raw["chain"][0], {**raw["chain"][1], **member}]})
    validate(cfg)
    return cfg, stage_spec(cfg, plan_stages(cfg, baselines=False)[1], 64)


def test_every_escape_option_off_is_the_grown_state_itself() -> None:
    base = {k: v for k, v in RAW["chain"][1].items() if k not in ("shrink", "perturb")}
    cfg, spec = _spec({}, {**RAW, "chain": [RAW["chain"][0], base]})
    assert (spec.snr_db, spec.inherit, spec.shrink, spec.perturb) == (None, "all", 1.0, 0.0)
    state = fresh_state(paradigm_named("clip"), spec.model, 3)
    out, on = escape_parent(state, spec, paradigm_named("clip"), 1)
    assert out is state and on == {}


def test_escape_options_apply_noise_then_inheritance_then_shrink_perturb() -> None:
    clip = paradigm_named("clip")
    cfg, spec = _spec({"snr_db": 10.0, "inherit": "vision", "shrink": 0.5, "perturb": 0.1})
    parent = fresh_state(clip, spec.parent, 5)
    grown = clip.grow(parent, spec.parent, spec.model, "preserve", spec.seed)
    out, on = escape_parent(grown, spec, clip, 1)
    assert on == {"snr_db": 10.0, "inherit": "vision", "shrink": 0.5, "perturb": 0.1}
    noisy = snr_noise(grown, 10.0, torch.Generator().manual_seed(noise_seed(spec.seed, 1)))
    fresh = fresh_state(clip, spec.model, spec.seed)                       # the growth = "none" start
    fresh2 = fresh_state(clip, spec.model, spec.seed + FRESH_SEED_OFFSET)  # shrink-and-perturb's
    for k, v in out.items():
        kept = noisy[k] if k.startswith("visual.") else fresh[k]           # text tower and logit scale: fresh
        want = kept if v.ndim == 0 else 0.5 * kept + 0.1 * fresh2[k]
        torch.testing.assert_close(v, want, rtol=0, atol=0, msg=k)
    assert not torch.equal(noisy["visual.proj"], grown["visual.proj"])


def test_a_grown_member_starts_from_the_noisy_vision_tower(tmp_path: Path) -> None:
    from compt.clip.growth import grow

    raw = {**RAW, "chain": [RAW["chain"][0], {"model": "test/B", "epochs": 1, "snr_db": 10.0, "inherit": "vision"}]}
    cfg = config_from_dict(raw)
    validate(cfg)
    train_run(cfg, tmp_path, progress=False)
    init = load_checkpoint(tmp_path / "chain/02-test_B/init.pt")
    a, b = get_model_config("test/A"), get_model_config("test/B")
    grown = grow(load_checkpoint(tmp_path / "chain/01-test_A/final.pt").state_dict, a, b, "preserve", 0)
    noisy = snr_noise(grown, 10.0, torch.Generator().manual_seed(noise_seed(0, 1)))
    fresh = fresh_state(paradigm_named("clip"), b, 0)
    for k, v in init.state_dict.items():
        torch.testing.assert_close(v, noisy[k] if k.startswith("visual.") else fresh[k], rtol=0, atol=0, msg=k)
    assert (init.lineage["snr_db"], init.lineage["inherit"]) == (10.0, "vision")
    assert "shrink" not in init.lineage


def test_a_changed_escape_setting_makes_a_finished_stage_changed() -> None:
    base = {k: v for k, v in RAW["chain"][1].items() if k not in ("shrink", "perturb")}
    plain = {**RAW, "chain": [RAW["chain"][0], base]}
    cfg, _ = _spec({}, plain)
    stage = plan_stages(cfg, baselines=False)[1]
    stored = json.loads(json.dumps(fingerprint(cfg, stage)))
    assert "snr_db" not in stored["members"][1] and "inherit" not in stored["members"][1]  # old runs: same
    for member, change in (({"snr_db": 10.0}, "member 2.snr_db: None -> 10.0"),
                           ({"inherit": "first:1"}, "member 2.inherit: None -> 'first:1'")):
        new, _ = _spec(member, plain)
        assert stage_changes(stored, new, plan_stages(new, baselines=False)[1]) == [change]


@pytest.mark.parametrize(("member", "match"), [
    ({"inherit": "audio"}, "names a tower, but this chain's models have towers vision, text"),
    ({"inherit": "first:0"}, "inherit must be all, a tower \\(vision, text\\) or first:K"),
    ({"inherit": "first"}, "inherit must be all"),
    ({"inherit": "last:2"}, "inherit must be all"),
    ({"snr_db": float("nan")}, "snr_db must be a finite number"),
    ({"snr_db": 10.0, "growth": "none"}, "snr_db acts on grown weights; this member is not grown"),
    ({"inherit": "text", "growth": "none"}, "inherit acts on grown weights"),
])
def test_bad_snr_and_inherit_settings_are_one_line(member: dict, match: str) -> None:
    base = {k: v for k, v in RAW["chain"][1].items() if k not in ("shrink", "perturb")}
    raw = {**RAW, "chain": [RAW["chain"][0], {**base, **member}]}
    with pytest.raises(UserError, match=match):
        validate(config_from_dict(raw))
