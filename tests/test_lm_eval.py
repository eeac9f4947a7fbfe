"""`compt eval RUN_DIR --lm-eval …`: lm-evaluation-harness on every member of a language-model run.

A two-member byte-level run (lm/test-A → lm/test-B, with the lm/test-B baseline) on the generated code text of
`test_lm_chain` is evaluated with the ``held-out`` task and a task folder of the test's own. The numbers are
checked against compt's and hand computations (the math is in `compt.lm.harness`):

- ``held-out``: lm-eval's bits_per_byte = N·L / (B ln 2), byte_perplexity = exp(N·L / B) and word_perplexity =
  exp(N·L / n_w), with L compt's held-out loss (nats per token, the trainer's ``val_loss`` over the same
  windows), N = W·C the tokens it averages over, B and n_w the document's UTF-8 bytes and words;
- a user task of short documents (each ≤ C tokens, so one rolling window each): bits_per_byte =
  −Σ_d log p(d | <eos>) / (Σ_d B_d · ln 2), the log-likelihood computed here with the model itself.

Also: ``compt report``'s per-task table against Δs computed by hand, one-line errors for bad inputs, the offline
switch taking effect before huggingface_hub is first imported, and the study driver's run discovery and copies.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w
import torch
from test_lm_chain import TEXT, raw

import compt
from compt.chain import train_run
from compt.checkpoint import load_checkpoint
from compt.cli import build_parser, main
from compt.config import config_from_dict
from compt.errors import UserError
from compt.lm.data import LMData
from compt.lm.harness import OFFLINE
from compt.lm.models import create_lm
from compt.report import write_report

pytest.importorskip("lm_eval")

MEMBERS = ("chain/01-lm_test-A", "chain/02-lm_test-B", "baselines/lm_test-B")
SHORT_DOCS = ["def f(x): x + 1", "print(1)", "x = 3  # three"]   # ≤ 16 byte tokens each: one window


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    corpus = tmp_path_factory.mktemp("text") / "code.txt"
    corpus.write_text(TEXT)
    cfg = raw(corpus)
    cfg["chain"] = cfg["chain"][:2]
    d = tmp_path_factory.mktemp("run")
    train_run(config_from_dict(cfg), d, progress=False)
    return d


@pytest.fixture(scope="module")
def user_tasks(tmp_path_factory) -> Path:
    """A task folder of the user's own: ``short-docs``, a rolling log-likelihood task over SHORT_DOCS."""
    d = tmp_path_factory.mktemp("tasks")
    (d / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in SHORT_DOCS))
    (d / "short-docs.yaml").write_text(
        f"task: short-docs\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {d / 'docs.jsonl'}\n"
        f"  cache_dir: {d / 'cache'}\ntest_split: test\noutput_type: loglikelihood_rolling\ndoc_to_text: ''\n"
        f"doc_to_target: text\nmetric_list:\n  - metric: bits_per_byte\n    aggregation: bits_per_byte\n"
        f"    higher_is_better: false\nmetadata:\n  version: 1.0\n")
    return d


@pytest.fixture(scope="module")
def evaluated(run_dir: Path, user_tasks: Path) -> Path:
    with pytest.MonkeyPatch.context() as mp:   # the offline switches compt sets are undone after the module
        for key in OFFLINE:
            mp.delenv(key, raising=False)
        assert main(["eval", str(run_dir), "--lm-eval", "held-out,short-docs", "--lm-eval-tasks", str(user_tasks),
                     "--batch-size", "4"]) == 0
        assert all(os.environ[key] == "1" for key in OFFLINE)
    return run_dir


def results(run: Path, member: str) -> dict:
    return json.loads((run / "lm_eval" / member / "results.json").read_text())


def final_model(run: Path, member: str) -> tuple[torch.nn.Module, object]:
    ckpt = load_checkpoint(run / member / "final.pt")
    return create_lm(ckpt.model_config, state_dict=ckpt.state_dict).eval(), ckpt.model_config


def test_held_out_equals_compt_held_out_loss(evaluated: Path) -> None:
    from compt.config import read_run_config

    held = json.loads((evaluated / "lm_eval/held-out/held_out.json").read_text())
    assert held["same_tokens"] and held["tokens"] == 8 * 16 == held["windows"] * held["context"]
    data = LMData(read_run_config(evaluated), evaluated)
    for member in MEMBERS:
        out = results(evaluated, member)
        assert out["compt_member"]["source"] == f"./{member}/final.pt"   # relative to the run
        model, cfg = final_model(evaluated, member)
        loss = data.evaluator(cfg)(model)["val_loss"]
        recorded = json.loads((evaluated / member / "result.json").read_text())["metrics"]["val_loss"]
        assert loss == pytest.approx(recorded, rel=1e-6)
        nats = held["tokens"] * loss          # −log-likelihood of the document
        got = out["results"]["held-out"]
        assert got["bits_per_byte,none"] == pytest.approx(nats / (held["bytes"] * math.log(2)), rel=1e-5)
        assert got["byte_perplexity,none"] == pytest.approx(math.exp(nats / held["bytes"]), rel=1e-5)
        assert got["word_perplexity,none"] == pytest.approx(math.exp(nats / held["words"]), rel=1e-4)


@torch.no_grad()
def test_user_task_folder_matches_hand_log_likelihood(evaluated: Path) -> None:
    model, _ = final_model(evaluated, "chain/02-lm_test-B")
    nats = 0.0
    for doc in SHORT_DOCS:
        ids = torch.tensor([[256, *doc.encode()]])     # <eos> as lm-eval's prefix token, then the bytes
        logp = model(input_ids=ids[:, :-1]).logits.float().log_softmax(-1)
        nats -= logp.gather(-1, ids[:, 1:, None]).sum().item()
    got = results(evaluated, "chain/02-lm_test-B")["results"]["short-docs"]["bits_per_byte,none"]
    assert got == pytest.approx(nats / (sum(len(d.encode()) for d in SHORT_DOCS) * math.log(2)), rel=1e-5)


def test_report_tabulates_chain_individual_and_delta(evaluated: Path, tmp_path: Path) -> None:
    out, md = write_report([evaluated], tmp_path)
    assert "### held-out" in md and "### short-docs" in md
    chain, ind = (results(evaluated, m)["results"]["held-out"] for m in MEMBERS[1:])
    cells = []
    for metric in ("word_perplexity,none", "byte_perplexity,none", "bits_per_byte,none"):
        c, i = chain[metric], ind[metric]
        cells += [f"{c:.4f}", f"{i:.4f}", f"{c - i:+.4f}"]
    assert f"| lm/test-B | {' | '.join(cells)} |" in md
    a = results(evaluated, MEMBERS[0])["results"]["held-out"]["bits_per_byte,none"]   # one run for both roles
    assert "| lm/test-A | " in md and f"{a:.4f} | {a:.4f} | +0.0000" in md
    assert json.loads((out / "lm_eval.json").read_text())[str(evaluated)]["columns"][0][0] == "held-out"


# `compt eval … --lm-eval` in a fresh interpreter, then whether huggingface_hub (imported on the way) is offline
OFFLINE_PROBE = """
import sys
from compt.cli import main
status = main(sys.argv[1:])
from huggingface_hub import constants
print(status, "huggingface_hub" in sys.modules, constants.HF_HUB_OFFLINE)
"""


def test_offline_before_huggingface_hub_is_imported(run_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE and k != "TRANSFORMERS_OFFLINE"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(compt.__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    argv = ["eval", str(run_dir), "--lm-eval", "held-out", "--device", "nope"]   # stops after the paradigm lookup
    done = subprocess.run([sys.executable, "-c", OFFLINE_PROBE, *argv], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.stdout.split() == ["2", "True", "True"], done.stderr[-2000:]
    assert "--device 'nope' is not a device name" in done.stderr


def eval_args(*argv: str):
    return build_parser().parse_args(["eval", *argv])


def test_bad_inputs_exit_2(run_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    for key in OFFLINE:
        monkeypatch.setenv(key, "1")   # restored afterwards, whatever compt sets
    clip = tmp_path / "clip"
    clip.mkdir()
    (clip / "config.toml").write_text(tomli_w.dumps({"name": "toy", "data": {"kind": "csv", "path": "x.csv"},
                                                     "chain": [{"model": "test/A", "epochs": 1}]}))
    cases = [((str(clip), "--lm-eval", "held-out"), "not a language-model run"),
             ((str(run_dir / MEMBERS[0] / "final.pt"), "--lm-eval", "held-out"), "is not a folder"),
             ((str(run_dir), "--lm-eval", "held-out,no-such-task"), "lm-eval knows no task no-such-task"),
             ((str(run_dir), "--lm-eval", "held-out", "--lm-eval-tasks", str(tmp_path / "none")), "no such folder"),
             ((str(run_dir), "--lm-eval", ","), "one or more task names"),
             ((str(run_dir), "--lm-eval-tasks", str(tmp_path)), "add --lm-eval")]
    for argv, message in cases:
        args = eval_args(*argv)
        with pytest.raises(UserError, match=message):
            args.func(args)
    monkeypatch.setitem(sys.modules, "lm_eval", None)   # as if the extra were not installed
    with pytest.raises(UserError, match=r"pip install 'compt\[lmeval\]'"):
        args = eval_args(str(run_dir), "--lm-eval", "held-out")
        args.func(args)
    assert main(["eval", str(clip), "--lm-eval", "held-out"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_study_driver_finds_runs_and_saves_the_small_jsons(evaluated: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import experiments
    import lm_eval_study

    monkeypatch.setattr(experiments, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(experiments, "SUMMARIES", tmp_path / "summaries")
    (variant, seed, run), *_ = lm_eval_study.study_runs(["lm4-preserve-kl"], [0, 1])
    assert (variant, seed, run) == ("lm4-preserve-kl", 0, tmp_path / "runs/lm/lm4-preserve-kl/seed0")
    assert lm_eval_study.why_not(run) == "not run here"
    with pytest.raises(SystemExit, match="unknown variant"):
        lm_eval_study.study_runs(["no-such"], [0])
    shutil.copytree(evaluated, run)
    assert lm_eval_study.why_not(run) == ""
    saved = experiments.save_summaries(run) / "lm_eval"
    assert sorted(str(p.relative_to(saved)) for p in saved.rglob("*") if p.is_file()) == sorted(
        ["members.json", "held-out/held_out.json"] + [f"{m}/results.json" for m in MEMBERS])
