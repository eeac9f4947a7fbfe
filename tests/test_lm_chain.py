"""Language-model chains end to end: config rules, run → grow → distill → report, resume, HF export, CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from helpers import StepLog, assert_resumed, crash_after_step

from compt.chain import train_run
from compt.checkpoint import load_checkpoint
from compt.cli import main
from compt.config import config_from_dict, validate
from compt.errors import UserError
from compt.lm.models import create_lm, get_lm_config
from compt.report import write_report
from compt.train import trainer as lm_train

TEXT = "".join(f"def f{i}(x):\n    return x * {i} + {i % 7}  # line {i}\n" for i in range(300))


def raw(corpus: Path) -> dict:
    return {"name": "lm", "baseline_epochs": 2, "baselines": True,
            "data": {"kind": "text", "path": str(corpus), "num_samples": 48, "eval_samples": 8},
            "train": {"batch_size": 8, "warmup_steps": 2, "stage_warmup_steps": 1, "lr": 3e-3, "log_every_steps": 1},
            "chain": [{"model": "lm/test-A", "epochs": 2},
                      {"model": "lm/test-B", "epochs": 1, "growth": "preserve", "distill": "kl+hidden",
                       "distill_weight": 1.0, "distill_temperature": 2.0},
                      {"model": "lm/test-C", "epochs": 1, "growth": "corner", "distill": "kl"}]}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    (root / "a.py.txt").write_text(TEXT[: len(TEXT) // 2])
    (root / "sub").mkdir()
    (root / "sub" / "b.txt").write_text(TEXT[len(TEXT) // 2:])
    return root


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus) -> Path:
    d = tmp_path_factory.mktemp("run")
    train_run(config_from_dict(raw(corpus)), d, progress=False)
    return d


def test_chain_runs_grows_exactly_and_reports(reference: Path) -> None:
    state = json.loads((reference / "run.json").read_text())
    assert [s["key"] for s in state["stages"]] == ["chain-1", "chain-2", "chain-3", "baseline-2", "baseline-3"]
    assert all(s["state"] == "done" for s in state["stages"])
    parent = load_checkpoint(reference / "chain/01-lm_test-A/final.pt")
    init = load_checkpoint(reference / "chain/02-lm_test-B/init.pt")
    assert init.lineage["operator"] == "preserve" and len(init.lineage["parent_sha256"]) == 64
    ids = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        want = create_lm(parent.model_config, state_dict=parent.state_dict)(input_ids=ids).logits
        got = create_lm(init.model_config, state_dict=init.state_dict)(input_ids=ids).logits
    assert (want - got).abs().max() < 1e-5
    result = json.loads((reference / "chain/02-lm_test-B/result.json").read_text())
    assert {"val_loss", "val_ppl", "train_kl", "train_hidden_mse", "train_lm_loss"} <= set(result["metrics"])
    assert result["train_flops"] > 0 and result["steps"] == 6
    out, md = write_report([reference])
    assert "held-out loss" in md and "| lm/test-C | chain |" in md
    assert json.loads((out / "report.json").read_text())["family"]["acceleration_flops"]["mean"] > 1


def test_training_lowers_held_out_loss(reference: Path, corpus: Path) -> None:
    """Member 1's final held-out loss is below the same model's at its (seeded) initialisation."""
    from compt.chain import fresh_state
    from compt.lm.data import LMData
    from compt.paradigm import paradigm_named

    cfg = config_from_dict(raw(corpus))
    evaluate = LMData(cfg, reference).evaluator(get_lm_config("lm/test-A"))
    untrained = create_lm("lm/test-A", state_dict=fresh_state(paradigm_named("lm"), get_lm_config("lm/test-A"), 0))
    history = json.loads((reference / "chain/01-lm_test-A/result.json").read_text())["history"]
    assert history[-1]["val_loss"] < evaluate(untrained.eval())["val_loss"] - 0.5


def test_export_loads_in_transformers_with_tokenizer(reference: Path) -> None:
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    hf = reference / "chain/03-lm_test-C/hf"
    model = AutoModelForCausalLM.from_pretrained(hf)
    final = load_checkpoint(reference / "chain/03-lm_test-C/final.pt")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in final.state_dict.items())
    assert Tokenizer.from_file(str(hf / "tokenizer.json")).encode("ab").ids == [97, 98]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(hf)
    assert tok("ab")["input_ids"] == [97, 98] and tok.eos_token_id == 256


def test_rerun_skips_finished_stages(reference: Path, corpus: Path) -> None:
    before = (reference / "chain/03-lm_test-C/final.pt").stat().st_mtime_ns
    train_run(config_from_dict(raw(corpus)), reference, progress=False)
    assert (reference / "chain/03-lm_test-C/final.pt").stat().st_mtime_ns == before
    changed = copy.deepcopy(raw(corpus))
    changed["chain"][1]["distill_temperature"] = 4.0
    with pytest.raises(UserError, match="distill_temperature"):
        train_run(config_from_dict(changed), reference, progress=False)


def test_interrupted_stage_resumes_bit_exactly(tmp_path: Path, corpus: Path, reference: Path, monkeypatch,
                                               capsys) -> None:
    cfg = raw(corpus) | {"baselines": False}
    cfg["train"] = cfg["train"] | {"ckpt_every_steps": 2}
    cfg["chain"] = cfg["chain"][:2]
    crash_after_step(monkeypatch, "lm/test-B", 3, "simulated crash")
    with pytest.raises(RuntimeError, match="simulated"):
        train_run(config_from_dict(cfg), tmp_path, progress=False)
    monkeypatch.undo()
    capsys.readouterr()
    log = StepLog(monkeypatch)
    train_run(config_from_dict(cfg), tmp_path, progress=False)
    assert_resumed(log, "lm/test-B", 2, 6, capsys.readouterr().err)   # checkpointed every 2 steps
    assert log.of("lm/test-A") == []                                   # the finished stage did not rerun
    again = load_checkpoint(tmp_path / "chain/02-lm_test-B/final.pt").state_dict
    # the reference run checkpointed at epoch ends only; weights do not depend on when checkpoints are written
    ref = load_checkpoint(reference / "chain/02-lm_test-B/final.pt").state_dict
    assert all(torch.equal(again[k], ref[k]) for k in ref)


@pytest.mark.parametrize("change,match", [
    (lambda r: r["chain"][1].update(model="test/B"), "cannot mix"),
    (lambda r: r["data"].update(kind="synthetic"), "kind = \"text\""),
    (lambda r: r["chain"][2].update(model="lm/test-A"), "not ascending"),
    (lambda r: r["chain"][1].update(distill="fd"), "unknown distillation loss 'fd'"),
    (lambda r: r["data"].update(tokenizer="wordpiece"), "unknown tokenizer 'wordpiece'"),
    (lambda r: [m.update(model=f"test/{x}") or m.pop("distill_temperature", None) for m, x in zip(r["chain"], "ABC")],
     "for language-model chains"),
    (lambda r: [m.update(model=f"test/{x}") for m, x in zip(r["chain"], "ABC")],
     "distill_temperature in \\[chain.1\\] \\(member 2\\) is a setting of language models"),
])
def test_invalid_lm_configs(corpus: Path, change, match) -> None:
    r = raw(corpus)
    change(r)
    with pytest.raises(UserError, match=match):
        validate(config_from_dict(r))


def test_cli_models_flops_plan(capsys) -> None:
    assert main(["models", "--family", "lm-cpu", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["language_models"]
    assert [r["model"] for r in rows] == ["lm/cpu-1M", "lm/cpu-2M", "lm/cpu-6M", "lm/cpu-22M"]
    assert main(["flops", "lm/160M", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    per_token = 3 * out["gflops"] * 1e9 / get_lm_config("lm/160M").context_length
    assert out["train_flops_per_token"] == pytest.approx(per_token)
    config = Path(__file__).parents[1] / "configs" / "lm-pythia.toml"
    assert main(["plan", str(config), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [m["model"] for m in plan["members"]][-1] == "lm/2.8B" and 0 < plan["reduction_vs_largest"] < 1


def test_demo_lm_quick_prints_the_table(tmp_path: Path, corpus: Path, capsys) -> None:
    assert main(["demo", "--lm", "--quick", "--run-dir", str(tmp_path), f"data.path=\"{corpus}\"",
                 "data.num_samples=24", "data.eval_samples=4"]) == 0
    out = capsys.readouterr().out
    assert "| lm/test-C | chain |" in out and "held-out perplexity" in out and "family acceleration" in out


def test_sigterm_saves_last_pt_then_stops_and_resumes(tmp_path: Path, corpus: Path, reference: Path,
                                                      monkeypatch) -> None:
    """As in the CLIP trainer (`compt.train.stage_loop.stop_signals`): SIGTERM checkpoints after the step."""
    import os
    import signal

    cfg = raw(corpus) | {"baselines": False}
    cfg["chain"] = cfg["chain"][:1]
    real = lm_train._after_step

    def term(st, *a):
        real(st, *a)
        if st.progress.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(lm_train, "_after_step", term)
    with pytest.raises(UserError, match="stopped by SIGTERM after step 4/12"):  # seen after the next step
        train_run(config_from_dict(cfg), tmp_path, progress=False)
    last = load_checkpoint(tmp_path / "chain/01-lm_test-A/last.pt")
    assert last.train_state["progress"]["step"] == 4
    monkeypatch.setattr(lm_train, "_after_step", real)
    train_run(config_from_dict(cfg), tmp_path, progress=False)
    got = load_checkpoint(tmp_path / "chain/01-lm_test-A/final.pt").state_dict
    ref = load_checkpoint(reference / "chain/01-lm_test-A/final.pt").state_dict
    assert all(torch.equal(got[k], ref[k]) for k in ref)


def test_losses_are_read_only_at_sync_steps_and_nan_stops_before_saving(tmp_path: Path, corpus: Path,
                                                                        monkeypatch) -> None:
    """12 steps, epochs end at 6 and 12, log every 5: only steps 5, 6, 10, 12 read losses. A NaN loss from
    step 7 on is caught at the next sync step (10), before anything is saved after step 6."""
    cfg = raw(corpus) | {"baselines": False}
    cfg["train"] = cfg["train"] | {"log_every_steps": 5}
    cfg["chain"] = cfg["chain"][:1]
    synced: list[int] = []
    sync, step = lm_train.sync_losses, lm_train._optimizer_step

    def poisoned(st, micro):
        sums = step(st, micro)
        return {k: v * float("nan") for k, v in sums.items()} if st.progress.step >= 6 else sums

    monkeypatch.setattr(lm_train, "sync_losses", lambda st, *a: synced.append(st.progress.step) or sync(st, *a))
    monkeypatch.setattr(lm_train, "_optimizer_step", poisoned)
    with pytest.raises(UserError, match="non-finite loss by step 10"):
        train_run(config_from_dict(cfg), tmp_path, progress=False)
    assert synced == [5, 6, 10]
    stage = tmp_path / "chain/01-lm_test-A"
    assert load_checkpoint(stage / "last.pt").train_state["progress"]["step"] == 6
    assert not (stage / "final.pt").exists()
