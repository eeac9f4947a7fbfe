"""The whole chain on the test-size family: train → grow → distill → eval → report, resume, config changes."""

import json
from pathlib import Path

import pytest
import torch

from compt import chain as chain_mod
from compt.chain import plan_stages, settings_changes
from compt.checkpoint import load_checkpoint
from compt.cli import main
from compt.config import config_from_dict
from compt.errors import UserError
from compt.report import write_report

RAW = {"name": "t", "baseline_epochs": 2, "baselines": True,
       "data": {"kind": "synthetic", "num_samples": 48, "eval_samples": 24, "captions_per_image": 2},
       "train": {"batch_size": 16, "warmup_steps": 2, "stage_warmup_steps": 1, "lr": 2e-3},
       "chain": [{"model": "test/A", "epochs": 2},
                 {"model": "test/B", "epochs": 1, "growth": "preserve", "distill": "fd"},
                 {"model": "test/C", "epochs": 1, "growth": "corner", "distill": "affinity"}]}


def run(run_dir: Path, raw: dict = RAW, **kw) -> dict:
    return chain_mod.train_run(config_from_dict(raw), run_dir, progress=False, **kw)


def final_weights(run_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {p.parent.name: load_checkpoint(p).state_dict for p in sorted(run_dir.glob("*/*/final.pt"))}


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys() and len(wa) == 5
    for stage in wa:
        for k in wa[stage]:
            assert torch.equal(wa[stage][k], wb[stage][k]), (stage, k)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ref")
    run(d)
    return d


def test_end_to_end_chain_and_report(reference: Path) -> None:
    state = json.loads((reference / "run.json").read_text())
    assert [s["key"] for s in state["stages"]] == ["chain-1", "chain-2", "chain-3", "baseline-2", "baseline-3"]
    assert all(s["state"] == "done" for s in state["stages"])
    lineage = json.loads((reference / "chain/02-test_B/lineage.json").read_text())
    assert lineage["operator"] == "preserve" and len(lineage["parent_sha256"]) == 64
    grown = load_checkpoint(reference / "chain/03-test_C/init.pt")
    assert grown.lineage["operator"] == "corner" and grown.model_config.name == "test/C"
    out, md = write_report([reference])
    summary = json.loads((out / "report.json").read_text())
    rows = {(m["model"], m["method"]) for m in summary["members"]}
    assert rows == {(m, meth) for m in ("test/A", "test/B", "test/C") for meth in ("chain", "individual")}
    fam = summary["family"]
    # the chain's counted FLOPs are the sum of its stages; member 1's baseline is chain stage 1; the family
    # acceleration is Σ individual ÷ Σ chain, both from the stages' own results
    flops = {d: json.loads((reference / d / "result.json").read_text())["train_flops"]
             for d in ("chain/01-test_A", "chain/02-test_B", "chain/03-test_C", "baselines/test_B", "baselines/test_C")}
    chain = flops["chain/01-test_A"] + flops["chain/02-test_B"] + flops["chain/03-test_C"]
    alone = flops["chain/01-test_A"] + flops["baselines/test_B"] + flops["baselines/test_C"]
    assert fam["baselines_counted"] and fam["chain_flops"]["mean"] == pytest.approx(chain)
    assert fam["acceleration_flops"]["mean"] == pytest.approx(alone / chain)
    assert all((out / name).stat().st_size > 1000 for name in ("accuracy_vs_compute.png", "cost_breakdown.png"))
    assert "| test/C | chain |" in md and "family acceleration" in md


def test_rerun_skips_finished_stages(reference: Path, monkeypatch) -> None:
    def boom(**_):
        raise AssertionError("a finished stage was retrained")

    monkeypatch.setattr("compt.train.train_stage", boom)
    results = run(reference)
    assert set(results) == {"chain-1", "chain-2", "chain-3", "baseline-2", "baseline-3"}


class Crash(Exception):
    pass


@pytest.mark.parametrize("phase", ["growth", "eval", "between-stages"])
def test_resume_after_crash_at_each_phase(phase: str, reference: Path, tmp_path: Path, monkeypatch) -> None:
    d = tmp_path / "run"
    if phase == "growth":  # die while writing the grown init.pt of stage 3
        real = chain_mod.save_checkpoint

        def save(path, **kw):
            if Path(path).name == "init.pt" and "03-" in str(path):
                raise Crash
            return real(path, **kw)
        monkeypatch.setattr(chain_mod, "save_checkpoint", save)
    elif phase == "eval":  # die in the first evaluation of stage 2
        import compt.clip.data

        real_eval, calls = compt.clip.data.evaluate, []

        def ev(model, suite, **kw):
            calls.append(1)
            if len(calls) == 2:
                raise Crash
            return real_eval(model, suite, **kw)
        monkeypatch.setattr(compt.clip.data, "evaluate", ev)
    else:  # die right after chain-2 is done
        real_stage = chain_mod.run_stage

        def stage(run_dir, cfg, st, *a, **kw):
            out = real_stage(run_dir, cfg, st, *a, **kw)
            if st.key == "chain-2":
                raise Crash
            return out
        monkeypatch.setattr(chain_mod, "run_stage", stage)
    with pytest.raises(Crash):
        run(d)
    monkeypatch.undo()
    assert any(s["state"] != "done" for s in json.loads((d / "run.json").read_text())["stages"])
    run(d)
    assert_same_weights(d, reference)


def test_changed_config_is_refused_then_rerun_from_stage(reference: Path, tmp_path: Path) -> None:
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(reference, d)
    raw = json.loads(json.dumps(RAW))
    raw["chain"][2]["epochs"] = 2
    with pytest.raises(UserError, match=r"stage chain-3 \(test/C\) was run with other settings .*epochs.*"
                                        r"--from-stage chain-3"):
        run(d, raw)
    run(d, raw, from_stage="chain-3")
    assert json.loads((d / "chain/03-test_C/lineage.json").read_text())["epochs"] == 2
    # untouched stages were kept bit for bit
    assert torch.equal(load_checkpoint(d / "chain/02-test_B/final.pt").state_dict["logit_scale"],
                       load_checkpoint(reference / "chain/02-test_B/final.pt").state_dict["logit_scale"])


def test_settings_added_later_at_their_default_are_no_change() -> None:
    old = {"members": [{"model": "test/A", "epochs": 1}], "train": {"lr": 1e-3}}

    def new(lr: float | None) -> dict:
        return {"members": [{"model": "test/A", "epochs": 1, "lr": lr}], "train": {"lr": 1e-3}}

    assert settings_changes(old, new(None)) == []
    assert settings_changes(old, new(5e-4)) == ["member 1.lr: None -> 0.0005"]  # 1-based like stage keys


def test_runtime_settings_are_no_change(reference: Path, tmp_path: Path) -> None:
    """Loader workers, compilation and logging cadence do not invalidate finished stages, also against
    fingerprints written when they were still recorded."""
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(reference, d)
    lineage = d / "chain/02-test_B/lineage.json"
    old = json.loads(lineage.read_text())
    assert "loader_workers" not in old["fingerprint"]["train"]
    old["fingerprint"]["train"] |= {"loader_workers": 0, "compile": False}
    lineage.write_text(json.dumps(old))
    raw = json.loads(json.dumps(RAW))
    raw["train"] |= {"loader_workers": 1, "compile": True, "log_every_steps": 3}
    cfg = config_from_dict(raw)
    chain_mod.check_or_reset(d, cfg, plan_stages(cfg, False), None)
    stage = plan_stages(cfg, False)[1]           # the same check decides whether another run's stage is reusable
    assert chain_mod.stage_changes(old["fingerprint"], cfg, stage) == []
    raw["chain"][1]["epochs"] = 2
    other = config_from_dict(raw)
    assert chain_mod.stage_changes(old["fingerprint"], other, plan_stages(other, False)[1]) == [
        "member 2.epochs: 1.0 -> 2.0"]


def test_member1_with_its_own_lr_gets_a_separate_baseline() -> None:
    cfg = config_from_dict({**RAW, "baselines": True})
    assert "baseline-1" not in [s.key for s in plan_stages(cfg, True)]
    raw = json.loads(json.dumps(RAW))
    raw["chain"][0]["lr"] = 5e-4
    stages = {s.key: s for s in plan_stages(config_from_dict({**raw, "baselines": True}), True)}
    assert stages["baseline-1"].member.lr is None and stages["chain-1"].member.lr == 5e-4


def test_unknown_from_stage(reference: Path) -> None:
    with pytest.raises(UserError, match="not a stage of this run"):
        run(reference, from_stage="chain-9")


def test_train_and_report_cli(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text(Path(__file__).with_name("data").joinpath("test-chain.toml").read_text())
    d = tmp_path / "cli-run"
    assert main(["train", str(cfg), "chain.1.epochs=0.5", "--run-dir", str(d), "--no-progress"]) == 0
    assert main(["report", str(d)]) == 0
    out = capsys.readouterr().out
    assert "| test/B | chain | 0.5 |" in out and "accuracy_vs_compute.png" in out
    assert main(["train", str(cfg), "chain.1.epochs=oops", "--run-dir", str(d)]) == 2


def test_report_of_several_runs_is_mean_and_std(reference: Path, tmp_path: Path) -> None:
    """Two different seeds: the report's mean ± std is the sample mean and the (n − 1) standard deviation."""
    import statistics

    seed1 = tmp_path / "seed1"
    run(seed1, RAW | {"train": RAW["train"] | {"seed": 1}})
    out, md = write_report([reference, seed1], tmp_path / "both")
    summary = json.loads((out / "report.json").read_text())
    row = next(m for m in summary["members"] if m["model"] == "test/C" and m["method"] == "chain")
    values = [json.loads((d / "chain/03-test_C/result.json").read_text())["metrics"]["zeroshot_top1"]
              for d in (reference, seed1)]
    assert values[0] != values[1]
    assert row["zeroshot_top1"]["n"] == 2 and row["zeroshot_top1"]["mean"] == pytest.approx(statistics.fmean(values))
    assert row["zeroshot_top1"]["std"] == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
    assert f"{statistics.fmean(values):.1f} ± {abs(values[0] - values[1]) / 2**0.5:.1f} |" in md


def test_report_refuses_a_non_run(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a compt run directory"):
        write_report([tmp_path])


def test_report_of_an_unfinished_chain_compares_the_same_members(reference: Path, tmp_path: Path) -> None:
    """Member 3 not finished: the family numbers compare members 1–2 with their own baselines, not with all three."""
    import shutil

    run_dir = tmp_path / "unfinished"
    shutil.copytree(reference, run_dir)
    (run_dir / "chain/03-test_C/result.json").unlink()
    out, md = write_report([run_dir])
    fam = json.loads((out / "report.json").read_text())["family"]
    flops = {d: json.loads((reference / d / "result.json").read_text())["train_flops"]
             for d in ("chain/01-test_A", "chain/02-test_B", "baselines/test_B")}
    a, b, b_alone = flops["chain/01-test_A"], flops["chain/02-test_B"], flops["baselines/test_B"]
    want = (a + b_alone) / (a + b)
    assert not fam["complete"] and fam["members"] == 2
    assert fam["acceleration_flops"]["mean"] == pytest.approx(want)
    assert "compare its 2 finished members with the same members' baselines" in md


def test_a_swin_chain_on_an_operator_swin_cannot_use_is_refused_before_training(tmp_path: Path, capsys) -> None:
    import tomli_w

    raw = {"name": "swin", "data": {"num_samples": 32}, "train": {"batch_size": 16},
           "chain": [{"model": "test/Swin-A", "epochs": 1}, {"model": "test/Swin-B", "epochs": 1}]}   # preserve
    path = tmp_path / "swin.toml"
    path.write_text(tomli_w.dumps(raw))
    for command in (["plan", str(path)], ["train", str(path), "--run-dir", str(tmp_path / "run")]):
        assert main(command) == 2
        assert "growth operator 'preserve' does not support Swin vision towers" in capsys.readouterr().err
    assert not (tmp_path / "run" / "chain").exists()
