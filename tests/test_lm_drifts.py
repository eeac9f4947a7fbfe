"""Language-model stages train in the one trainer, so what the CLIP path does the LM path does too: compile and
precision reach the wrapper, lineage records threads, stage validation gives one line, checkpoint-then-evaluate
with pending-evaluation recovery, the task's post-step hook, a forked-generator fresh init, the training
loader, and the paradigm's own distillation default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from compt import distributed
from compt.chain import fresh_state, train_run
from compt.checkpoint import load_checkpoint
from compt.cli import main
from compt.config import config_from_dict, validate
from compt.lm.models import get_lm_config
from compt.lm.task import LMTask
from compt.paradigm import paradigm_named
from compt.train import trainer

TEXT = "".join(f"def g{i}(y):\n    return y - {i} * {i % 5}  # row {i}\n" for i in range(300))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(TEXT)
    return path


def raw(corpus: Path, **train) -> dict:
    return {"name": "lm-drift", "baseline_epochs": 1, "baselines": False,
            "data": {"kind": "text", "path": str(corpus), "num_samples": 32, "eval_samples": 8},
            "train": {"batch_size": 8, "warmup_steps": 1, "stage_warmup_steps": 1, "lr": 3e-3, **train},
            "chain": [{"model": "lm/test-A", "epochs": 1},
                      {"model": "lm/test-B", "epochs": 1, "growth": "preserve"}]}   # no distill key


def test_an_lm_member_without_distill_trains_with_the_lm_default(corpus: Path, tmp_path: Path) -> None:
    cfg = config_from_dict(raw(corpus))
    validate(cfg)  # was: "unknown distillation loss 'fd'"
    results = train_run(cfg, tmp_path, progress=False)
    lineage = json.loads((tmp_path / "chain/02-lm_test-B/lineage.json").read_text())
    assert lineage["distill"] == "kl" and lineage["spec"]["distill"] == "kl"
    assert "train_kl" in results["chain-2"]["metrics"]
    assert lineage["threads"] == torch.get_num_threads()  # what makes a resume bit-exact is recorded


def test_lm_stage_compiles_its_decoder_layers_and_passes_precision(corpus: Path, tmp_path: Path,
                                                                   monkeypatch) -> None:
    seen = []
    real = distributed.wrap_student

    def spy(model, info, **kw):
        seen.append(kw)
        return real(model, info, **kw)

    monkeypatch.setattr(distributed, "COMPILE_BACKEND", "eager")
    monkeypatch.setattr(distributed, "wrap_student", spy)
    cfg = raw(corpus, compile=True, precision="fp32")
    cfg["chain"] = cfg["chain"][:1]
    train_run(config_from_dict(cfg), tmp_path, progress=False)
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    assert seen and seen[0]["compile"] is True and seen[0]["precision"] == "fp32"
    assert seen[0]["blocks"] == (LlamaDecoderLayer,)


def test_lm_batch_that_does_not_split_into_micro_batches_is_one_line(corpus: Path, tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "bad.toml"
    import tomli_w

    cfg.write_text(tomli_w.dumps(raw(corpus, accum_steps=3)))
    assert main(["train", str(cfg), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "batch_size 8 must be divisible by train.accum_steps 3" in err


def test_lm_stage_killed_during_evaluation_reruns_it_on_resume(corpus: Path, tmp_path: Path, monkeypatch) -> None:
    cfg = raw(corpus, eval_every_epochs=1)
    cfg["chain"][0]["epochs"] = 2   # 4 steps per epoch: evaluations at steps 4 and 8
    cfg["chain"] = cfg["chain"][:1]
    calls = {"n": 0}
    real = trainer._evaluate

    def dies(st):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("killed during evaluation")
        real(st)

    monkeypatch.setattr(trainer, "_evaluate", dies)
    with pytest.raises(RuntimeError, match="killed during evaluation"):
        train_run(config_from_dict(cfg), tmp_path, progress=False)
    last = load_checkpoint(tmp_path / "chain/01-lm_test-A/last.pt").train_state["progress"]
    assert last["step"] == 4 and last["eval_pending"]   # checkpointed before it evaluated
    results = train_run(config_from_dict(cfg), tmp_path, progress=False)
    assert [h["step"] for h in results["chain-1"]["history"]] == [4, 8]


def test_lm_task_post_step_runs_every_step_and_the_loader_is_the_training_loader(corpus: Path, tmp_path: Path,
                                                                                 monkeypatch) -> None:
    steps, loaders = [], []
    real_loader = trainer.train_loader
    monkeypatch.setattr(LMTask, "post_step", lambda self: steps.append(1))
    monkeypatch.setattr(trainer, "train_loader", lambda *a, **kw: loaders.append(kw) or real_loader(*a, **kw))
    cfg = raw(corpus)
    cfg["chain"] = cfg["chain"][:1]
    train_run(config_from_dict(cfg), tmp_path, progress=False)
    assert len(steps) == 4 and len(loaders) == 1


def test_a_fresh_lm_member_is_drawn_from_its_own_seeded_generator(corpus: Path, tmp_path: Path,
                                                                   monkeypatch) -> None:
    got = {}
    real = trainer.train_stage

    def spy(spec, **kw):
        got["init"] = kw["init_state"]
        return real(spec, **kw)

    monkeypatch.setattr("compt.train.train_stage", spy)
    cfg = raw(corpus)
    cfg["chain"] = cfg["chain"][:1]
    torch.rand(1000)  # whatever the global RNG did before, the init is the same
    train_run(config_from_dict(cfg), tmp_path, progress=False)
    want = fresh_state(paradigm_named("lm"), get_lm_config("lm/test-A"), 0)
    assert got["init"] is not None and all(torch.equal(got["init"][k], want[k]) for k in want)
