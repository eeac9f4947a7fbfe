"""The cost planner on hand-computed cases, the shipped paper configs, and the `compt plan` CLI."""

import json
from pathlib import Path

import pytest

from compt.cli import main
from compt.config import config_from_dict, load_config
from compt.plan import FeedAssumptions, feed_warnings, plan_chain

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

SMALL = {"name": "small", "baseline_epochs": 4, "data": {"num_samples": 10, "captions_per_image": 2},
         "chain": [{"model": "test/A", "epochs": 4}, {"model": "test/B", "epochs": 2, "distill": "fd"}]}


def test_hand_computed_two_member_chain() -> None:
    # forward FLOPs per sample with 2 captions (see test_flops for the per-tower arithmetic):
    f_a = 148_032 + 2 * 115_200      # 378_432
    f_b = 563_136 + 2 * 229_888      # 1_022_912
    plan = plan_chain(config_from_dict(SMALL))
    a, b = plan.members
    assert a.individual_cost == 4 * 10 * 3 * f_a == 45_411_840
    assert b.individual_cost == 4 * 10 * 3 * f_b == 122_749_440
    assert a.stage_cost == a.individual_cost
    assert b.stage_cost == 2 * 10 * (3 * f_b + f_a) == 68_943_360   # 3 × student + 1 × teacher forward
    assert plan.chain_cost == b.cumulative_cost == 114_355_200
    assert plan.reduction_vs_largest == pytest.approx(1 - 114_355_200 / 122_749_440)
    assert plan.acceleration == pytest.approx((45_411_840 + 122_749_440) / 114_355_200)


def test_teacher_cache_and_no_distillation_pricing() -> None:
    f_a, f_b = 378_432, 1_022_912
    cached = plan_chain(config_from_dict(SMALL), cached_teacher=True)
    assert cached.members[1].stage_cost == 2 * 10 * 3 * f_b + 1 * 10 * f_a
    raw = {**SMALL, "chain": [SMALL["chain"][0], {**SMALL["chain"][1], "distill": "none"}]}
    assert plan_chain(config_from_dict(raw)).members[1].stage_cost == 2 * 10 * 3 * f_b


def test_teacher_cache_size_per_node(capsys) -> None:
    plan = plan_chain(config_from_dict(SMALL))
    assert [m.teacher_cache_bytes for m in plan.members] == [0, 2 * 10 * (1 + 2) * 16]  # bf16, N (1 + K) E_A
    cfg = load_config(CONFIGS / "paper-cc3m-vit.toml")
    # CC3M, 7 captions, E = 512: 2 B × 2.89 M × 8 × 512 ≈ 22 GiB per node (the fp32 per-rank table was 47 GB)
    assert plan_chain(cfg).members[1].teacher_cache_bytes == 2 * 2_890_000 * 8 * 512
    assert main(["plan", str(CONFIGS / "paper-cc3m-vit.toml")]) == 0
    assert "teacher cache per node (bf16, train.teacher_cache): paper/ViT-S-16 22 GiB" in capsys.readouterr().out


def test_paper_cc3m_chain_costs_about_28_percent_of_vit_l() -> None:
    cfg = load_config(CONFIGS / "paper-cc3m-vit.toml")
    assert [m.epochs for m in cfg.chain] == [128, 24, 18, 15] and cfg.data.num_samples == 2_890_000
    plan = plan_chain(cfg)
    assert plan.reduction_vs_largest == pytest.approx(0.72, abs=0.01)   # the paper's "72 % less"
    assert 5.0 < plan.acceleration < 6.0                                 # the paper reports 5.68× for 4 models


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_config_validates_and_plans(path: Path, capsys) -> None:
    assert main(["plan", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"members", "chain_cost", "individual_total", "reduction_vs_largest", "acceleration"} <= set(out)
    assert all({"model", "individual_cost", "stage_cost"} <= set(m) for m in out["members"])
    assert out["chain_cost"] == pytest.approx(sum(m["stage_cost"] for m in out["members"]))


def test_plan_human_output_is_a_table(capsys) -> None:
    assert main(["plan", str(CONFIGS / "paper-cc3m-vit.toml")]) == 0
    out = capsys.readouterr().out
    assert "EFLOPs" in out and "reduction vs largest:  71.8%" in out and "paper/ViT-L-16" in out


def test_flip_recipe_config_costs_what_the_paper_config_costs() -> None:
    """configs/paper-cc3m-vit-flip.toml: more epochs on half the patches, the same counted FLOPs per stage."""
    paper = plan_chain(load_config(CONFIGS / "paper-cc3m-vit.toml"), cached_teacher=True)
    flip_cfg = load_config(CONFIGS / "paper-cc3m-vit-flip.toml")
    flip = plan_chain(flip_cfg, cached_teacher=True)
    assert [m.patch_dropout for m in flip_cfg.chain[1:]] == [0.5] * 3
    for a, b in zip(paper.members, flip.members):
        assert b.stage_cost == pytest.approx(a.stage_cost, rel=1e-3) and b.epochs >= a.epochs


def test_loader_feed_warning_names_the_members_a_decoding_loader_cannot_feed(capsys) -> None:
    """CC3M as a CSV (2.89 M images, decoded per sample): at the default assumptions (3 ms per sample, 8 workers
    → 2,667 samples/s per rank; 989 TFLOP/s at 40 % MFU) ViT-T-16 needs ≈ 10 k/s and ViT-S-16 ≈ 3.5 k/s."""
    cfg = load_config(CONFIGS / "paper-cc3m-vit.toml")
    lines = feed_warnings(cfg, plan_chain(cfg))
    assert [line.split()[1] for line in lines] == ["paper/ViT-T-16", "paper/ViT-S-16"]
    assert "about 9,996 samples/s per accelerator (989 TFLOP/s bf16 at 40 % MFU" in lines[0]
    assert "8 loader workers at 3 ms per sample deliver about 2,667 per rank" in lines[0]
    # 3× faster workers (8,000/s) feed everything but ViT-T; a 10× slower accelerator needs no more than 2,667/s
    assert len(feed_warnings(cfg, plan_chain(cfg), FeedAssumptions(loader_ms=1.0))) == 1
    assert feed_warnings(cfg, plan_chain(cfg), FeedAssumptions(peak_tflops=98.9)) == []
    assert main(["plan", str(CONFIGS / "paper-cc3m-vit.toml"), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["warnings"] == lines
    assert "compt plan: warning: paper/ViT-T-16 likely loader-bound" in captured.err


def test_no_feed_warning_for_data_held_in_memory(capsys) -> None:
    """The same chain on synthetic data (rendered once into memory), or a CSV small enough to pre-decode."""
    for override in ("data.kind=synthetic", "data.predecode_max=3000000"):
        assert main(["plan", str(CONFIGS / "paper-cc3m-vit.toml"), override]) == 0
        assert "loader-bound" not in capsys.readouterr().err
    assert main(["plan", str(CONFIGS / "paper-cc3m-vit.toml"), "--mfu", "2"]) != 0
    assert "--mfu in (0, 1]" in capsys.readouterr().err


# time-to-target on 2 seeds: T = ⌈4 · 10 / 3⌉ = 14 steps, warmup 2, WSD cooldown 0.2 → cooldown from step 12;
# probes every epoch at s = ⌈10k / 3⌉ = 4, 7, 10 with branch ends L(s) = 5, 8, 12: 1 + 1 + 2 = 4 branch steps
PARITY = {**SMALL, "baselines": True, "parity_protocol": "time-to-target", "target_seeds": 2,
          "baseline_probe_every": 1, "train": {"batch_size": 3, "warmup_steps": 2},
          "chain": [SMALL["chain"][0], {**SMALL["chain"][1], "until": "baseline"}]}


def test_time_to_target_baselines_pay_every_seed_and_every_probe_branch() -> None:
    f_a, f_b = 378_432, 1_022_912
    plan = plan_chain(config_from_dict(PARITY))
    arm = plan.baselines
    assert (arm.protocol, arm.seeds, arm.probe_every, arm.shared) == ("time-to-target", 2, 1.0, "")
    a, b = arm.members
    assert (a.seeds, a.steps, a.probes, a.probe_steps) == ((0, 1), 14, 3, 4)
    # per seed (T + branch steps) · B samples = (14 + 4) · 3 = 54, not E · N = 40 nor T · B = 42
    assert a.cost == 2 * 54 * 3 * f_a == 122_611_968
    assert b.cost == 2 * 54 * 3 * f_b == 331_423_488
    assert arm.total == a.cost + b.cost
    # the chain and family numbers still compare one baseline per member on E · N samples
    assert plan.chain_cost == 114_355_200 and plan.individual_total == 45_411_840 + 122_749_440


def test_baseline_curve_on_several_seeds_shares_member_1s_baseline_with_the_chain() -> None:
    """Member 1 trains the individual recipe: its baseline on the run's seed is chain stage 1, not trained twice."""
    f_a, f_b = 378_432, 1_022_912
    cfg = config_from_dict({**PARITY, "parity_protocol": "baseline-curve", "baseline_probe_every": None,
                            "train": {"batch_size": 3, "warmup_steps": 2, "seed": 5}})
    arm = plan_chain(cfg).baselines
    a, b = arm.members
    assert (arm.protocol, arm.probe_every, arm.shared) == ("baseline-curve", 0.0, "test/A")
    assert (a.seeds, b.seeds) == ((6,), (5, 6)) and a.probes == b.probes == b.probe_steps == 0
    assert arm.total == 1 * 42 * 3 * f_a + 2 * 42 * 3 * f_b     # 14 steps · 3 per seed, no probes


def test_no_baseline_arm_for_one_seed_under_baseline_curve() -> None:
    assert plan_chain(config_from_dict({**SMALL, "baselines": True})).baselines is None
    assert plan_chain(config_from_dict(SMALL)).baselines is None


def test_plan_names_the_protocol_and_the_baselines_total(tmp_path: Path, capsys) -> None:
    import tomli_w

    path = tmp_path / "parity.toml"
    path.write_bytes(tomli_w.dumps(PARITY).encode())
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "parity protocol time-to-target: every baseline trains on the stopping members' WSD schedule" in out
    assert "baseline test/A             2 seed(s) × (14 steps + 4 branch steps of 3 probes): 1.23e+08 FLOPs" in out
    assert "baselines total:       4.54e+08 FLOPs" in out
    assert main(["plan", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["baselines"]["total"] == 122_611_968 + 331_423_488


def test_member_1_used_as_it_is_without_an_individual_schedule_plans(tmp_path: Path, capsys) -> None:
    """init with 0 epochs and no baseline_epochs: no individual schedule, so no percentages — and no crash."""
    (tmp_path / "a.pt").write_bytes(b"")
    cfg = config_from_dict({"name": "as-is", "chain": [{"model": "test/A", "epochs": 0, "init": str(tmp_path / "a.pt")},
                                                        {"model": "test/B", "epochs": 1}]})
    plan = plan_chain(cfg)
    assert plan.largest_individual == 0 and plan.reduction_vs_largest == 0 and plan.members[0].stage_cost == 0
    path = tmp_path / "as-is.toml"
    path.write_text(f'name = "as-is"\n[[chain]]\nmodel = "test/A"\nepochs = 0\ninit = "{tmp_path / "a.pt"}"\n'
                    '[[chain]]\nmodel = "test/B"\nepochs = 1\n')
    assert main(["plan", str(path)]) == 0
    assert "set baseline_epochs" in capsys.readouterr().out
