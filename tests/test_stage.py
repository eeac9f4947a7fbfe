"""`StageSpec`: each setting resolved once from the run config; one cost model for planner and trainer."""

import json
from pathlib import Path

import pytest

from compt.chain import individual_stage, plan_stages, stage_spec
from compt.clip.flops import model_flops
from compt.config import config_from_dict
from compt.costs import training_flops
from compt.plan import plan_chain

RAW = {"name": "s", "baseline_epochs": 3,
       "data": {"num_samples": 40, "captions_per_image": 2},
       "train": {"batch_size": 16, "lr": 2e-3, "min_lr": 1e-5, "warmup_steps": 5, "stage_warmup_steps": 2, "seed": 7},
       "chain": [{"model": "test/A", "epochs": 2},
                 {"model": "test/B", "epochs": 1.5, "distill": "fd", "distill_weight": 50.0, "lr": 4e-4},
                 {"model": "test/C", "epochs": 1, "distill": "none", "warmup_steps": 9, "growth": "corner"}]}


def test_specs_resolve_every_setting_once() -> None:
    cfg = config_from_dict(RAW)
    a, b, c = (stage_spec(cfg, s, 40) for s in plan_stages(cfg, baselines=False))
    assert (a.lr, a.warmup_steps, a.total_steps, a.teacher, a.distill, a.growth) == (2e-3, 5, 5, None, "none", "none")
    assert (b.lr, b.warmup_steps, b.total_steps, b.distill, b.distill_weight) == (4e-4, 2, 4, "fd", 50.0)
    assert b.parent is b.teacher and b.teacher.name == "test/A" and b.distills
    assert (c.parent.name, c.teacher, c.distill, c.growth, c.warmup_steps, c.total_steps) == \
        ("test/B", None, "none", "corner", 3, 3)                      # warmup clamped to the stage length
    assert all(s.captions == 2 and s.seed == 7 and s.min_lr == 1e-5 for s in (a, b, c))
    assert b.student_flops == model_flops(b.model).per_sample(2)
    assert b.teacher_flops == model_flops(a.model).per_sample(2)
    base = stage_spec(cfg, individual_stage(cfg, 1), 40)             # a baseline never distills
    assert (base.from_scratch, base.teacher, base.lr, base.warmup_steps, base.epochs) == (True, None, 2e-3, 5, 3)
    assert b.summary()["teacher"] == "test/A" and b.summary()["steps"] == 4


def test_plan_prices_specs_with_the_training_cost_function() -> None:
    cfg = config_from_dict(RAW)
    plan = plan_chain(cfg)
    specs = [stage_spec(cfg, s, 40) for s in plan_stages(cfg, baselines=False)]
    for member, spec in zip(plan.members, specs):
        assert member.stage_cost == training_flops(spec.student_flops, spec.teacher_flops, spec.epochs * 40)
    assert plan.members[1].stage_cost == pytest.approx(1.5 * 40 * (3 * specs[1].student_flops + specs[0].student_flops))


def test_training_flops_with_and_without_teacher_cache() -> None:
    assert training_flops(10.0, 4.0, 8) == 8 * (30 + 4)
    assert training_flops(10.0, 4.0, 8, cached_teacher=True, fill_samples=5) == 5 * 4 + 8 * 30
    assert training_flops(10.0, 0.0, 8, cached_teacher=True, fill_samples=5) == 8 * 30


def test_run_directories_of_the_previous_layout_stay_recognised(tmp_path) -> None:
    """tests/data/lineage-v1.json: stage folders and fingerprints as the code before StageSpec wrote them."""
    from compt.chain import check_or_reset, fingerprint
    from compt.fingerprints import without_unfingerprinted

    old = json.loads((Path(__file__).parent / "data" / "lineage-v1.json").read_text())
    cfg = config_from_dict(old["config"])
    stages = plan_stages(cfg, baselines=True)
    assert {s.key: s.directory for s in stages} == {k: v["dir"] for k, v in old["stages"].items()}
    for s in stages:
        stored = old["stages"][s.key]["fingerprint"]
        # the same settings, less those that no longer count as a change on resume (workers, threads …, and
        # member 1's growth and distillation settings in a grown stage's fingerprint: member 1 never uses them)
        kept = without_unfingerprinted(stored)
        assert json.loads(json.dumps(fingerprint(cfg, s), default=str)) == kept
        (tmp_path / s.directory).mkdir(parents=True)
        (tmp_path / s.directory / "lineage.json").write_text(json.dumps({"fingerprint": stored}))
    check_or_reset(tmp_path, cfg, stages, None)  # no "was run with other settings"


def test_specs_resolve_the_objective_and_price_language_models() -> None:
    """SigLIP is resolved once into the spec (and its models carry the logit bias); LM stages get their
    forward FLOPs from compt.lm.flops, and the plan prices them with the same cost function."""
    from compt.clip.siglip import INIT_LOGIT_BIAS
    from compt.lm.flops import lm_flops
    from compt.lm.models import get_lm_config

    clip = [stage_spec(config_from_dict(RAW), s, 40) for s in plan_stages(config_from_dict(RAW), baselines=False)]
    siglip_raw = {**RAW, "train": {**RAW["train"], "objective": "siglip"}}
    sig = stage_spec(config_from_dict(siglip_raw), plan_stages(config_from_dict(siglip_raw), baselines=False)[1], 40)
    assert {s.objective for s in clip} == {"clip"} and clip[1].model.init_logit_bias is None
    assert sig.objective == "siglip" and sig.model.init_logit_bias == sig.teacher.init_logit_bias == INIT_LOGIT_BIAS
    lm = config_from_dict({"name": "lm", "baseline_epochs": 1, "data": {"kind": "text", "num_samples": 32},
                           "chain": [{"model": "lm/test-A", "epochs": 1},
                                     {"model": "lm/test-B", "epochs": 2, "distill": "kl", "distill_temperature": 2.0}]})
    a, b = (stage_spec(lm, s, 32) for s in plan_stages(lm, baselines=False))
    assert (a.distill_temperature, b.distill_temperature, b.distill) == (1.0, 2.0, "kl")
    assert b.student_flops == lm_flops(get_lm_config("lm/test-B")).forward
    assert b.teacher_flops == lm_flops(get_lm_config("lm/test-A")).forward
    assert plan_chain(lm).members[1].stage_cost == training_flops(b.student_flops, b.teacher_flops, 2 * 32)
