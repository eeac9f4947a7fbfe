"""Language-model runs on token shards and documents: SIGKILL and resume equals an uninterrupted run, 2 gloo
processes train what 1 process trains.

Run as a script this file is the other side of both tests:
``python tests/test_lm_shards_run.py kill DATA RUN STEP`` trains the token-shard run and SIGKILLs itself right
after optimizer step STEP; ``torchrun --nproc_per_node 2 tests/test_lm_shards_run.py ddp DATA OUT`` trains the
token-shard and document runs into OUT/tokens and OUT/documents.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import StepLog, assert_resumed, assert_same_finals, final_weights, read_metrics

from compt import distributed
from compt.chain import train_run
from compt.config import config_from_dict

TORCHRUN = Path(sys.executable).with_name("torchrun")


def make_data(root: Path) -> None:
    """Two uint16 token shards with their tokens.json, and a JSONL + JSONL document folder."""
    rng = np.random.default_rng(0)
    (root / "tokens").mkdir(parents=True)
    for i, n in enumerate((1200, 900)):
        rng.integers(0, 257, size=n).astype(np.uint16).tofile(root / "tokens" / f"shard-{i}.bin")
    (root / "tokens" / "tokens.json").write_text(json.dumps({"dtype": "uint16", "vocab_size": 257, "eos_id": 256}))
    (root / "docs").mkdir()
    for name, lo in (("a.jsonl", 0), ("b.jsonl", 60)):
        with open(root / "docs" / name, "w") as f:
            for i in range(lo, lo + 60):
                f.write(json.dumps({"text": f"doc {i} " + "xyz " * (i % 11)}) + "\n")


def run_config(data: Path, kind: str) -> dict:
    """lm/test-A (1 epoch over every training window, checkpoints every 4 steps) grown into lm/test-B (kl)."""
    return {"name": kind, "baselines": False,
            "data": {"kind": kind, "path": str(data / ("tokens" if kind == "tokens" else "docs")),
                     "num_samples": 10_000, "eval_samples": 6},
            "train": {"batch_size": 8, "warmup_steps": 2, "stage_warmup_steps": 1, "log_every_steps": 1,
                      "ckpt_every_steps": 4, "loader_workers": 0},
            "chain": [{"model": "lm/test-A", "epochs": 1},
                      {"model": "lm/test-B", "epochs": 0.5, "growth": "preserve", "distill": "kl",
                       "distill_weight": 1.0}]}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lm-data")
    make_data(root)
    return root


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data: Path) -> Path:
    out = tmp_path_factory.mktemp("reference")
    train_run(config_from_dict(run_config(data, "tokens")), out, progress=False)
    return out


def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(data: Path, reference: Path, tmp_path: Path,
                                                                   monkeypatch, capsys) -> None:
    proc = subprocess.run([sys.executable, __file__, "kill", str(data), str(tmp_path), "6"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    stage = tmp_path / "chain" / "01-lm_test-A"
    assert not (stage / "final.pt").exists() and (stage / "last.pt").is_file()
    log = StepLog(monkeypatch)
    train_run(config_from_dict(run_config(data, "tokens")), tmp_path, progress=False)
    total = len(read_metrics(reference / "chain" / "01-lm_test-A"))
    assert total > 8   # the kill (after step 6, checkpoint at 4) lies inside the one epoch
    assert_resumed(log, "lm/test-A", 4, total, capsys.readouterr().err)
    assert_same_finals(tmp_path, reference)
    exported = json.loads((tmp_path / "chain" / "01-lm_test-A" / "hf" / "tokenizer.json").read_text())
    run_tok = json.loads((tmp_path / "data" / "tokenizer.json").read_text())   # the run's tokenizer
    assert (exported["model"], exported["added_tokens"]) == (run_tok["model"], run_tok["added_tokens"])
    assert read_metrics(tmp_path / "chain" / "01-lm_test-A") == read_metrics(reference / "chain" / "01-lm_test-A")


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory, data: Path) -> Path:
    out = tmp_path_factory.mktemp("two_proc")
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", str(Path(__file__).resolve()), "ddp", str(data),
           str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_each_rank_tokenises_its_share_of_the_document_files(two_process_runs: Path) -> None:
    shares = [json.loads((two_process_runs / f"tokenised-by-rank{r}.json").read_text()) for r in (0, 1)]
    assert shares == [["a.jsonl"], ["b.jsonl"]]


@pytest.mark.parametrize("kind", ["tokens", "documents"])
def test_two_gloo_processes_train_what_one_trains(two_process_runs: Path, data: Path, reference: Path,
                                                  tmp_path: Path, kind: str) -> None:
    one = reference if kind == "tokens" else tmp_path
    if kind == "documents":
        train_run(config_from_dict(run_config(data, kind)), one, progress=False)
    for stage in ("01-lm_test-A", "02-lm_test-B"):
        a, b = read_metrics(one / "chain" / stage), read_metrics(two_process_runs / kind / "chain" / stage)
        assert len(a) == len(b) > 3
        for x, y in zip(a, b, strict=True):
            assert x.pop("step") == y.pop("step") and x["loss"] == pytest.approx(y["loss"], rel=1e-4, abs=1e-5)
    for stage in ("01-lm_test-A", "02-lm_test-B"):
        wa, wb = final_weights(one / "chain" / stage), final_weights(two_process_runs / kind / "chain" / stage)
        assert wa.keys() == wb.keys()
        for k in wa:
            torch.testing.assert_close(wa[k], wb[k], rtol=1e-3, atol=1e-4)


if __name__ == "__main__":
    mode, data_dir, out_dir = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    torch.set_num_threads(1)
    if mode == "kill":
        from compt.train import trainer

        real, kill_at = trainer._after_step, int(sys.argv[4])

        def crash(st, *a):
            real(st, *a)
            if st.progress.step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

        trainer._after_step = crash
        train_run(config_from_dict(run_config(data_dir, "tokens")), out_dir, progress=False)
    else:
        from compt.lm import corpus

        tokenise, mine = corpus._tokenize, []

        def recorded(doc, *a):
            mine.append(doc.name)
            tokenise(doc, *a)

        corpus._tokenize = recorded
        for kind in ("tokens", "documents"):
            train_run(config_from_dict(run_config(data_dir, kind)), out_dir / kind, progress=False)
        (out_dir / f"tokenised-by-rank{os.environ['RANK']}.json").write_text(json.dumps(mine))
        distributed.shutdown()
