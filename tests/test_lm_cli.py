"""`compt export` and `compt eval --data text` on language-model runs and checkpoints.

A two-member BPE run on the generated code text of `test_lm_chain` is exported; every member folder loads with
plain `transformers` (compt made unimportable) and gives compt's logits; `compt eval` reproduces the held-out
loss the trainer recorded, and on a loose byte-level checkpoint a hand computation of the cross-entropy.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_lm_chain import TEXT, raw

from compt.chain import train_run
from compt.checkpoint import load_checkpoint, save_checkpoint, sha256_file
from compt.cli import main
from compt.clip.models import create_model, get_model_config
from compt.config import config_from_dict
from compt.export import export_checkpoint, run_members
from compt.lm.models import create_lm, get_lm_config

PROMPT = "def f12(x):\n    return x * 12"

# Loads exported folders with transformers alone: compt is made unimportable, whatever the venv holds.
PLAIN_TRANSFORMERS = """
import sys
sys.modules["compt"] = None
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
prompt, out = sys.argv[1], {}
for folder in sys.argv[3:]:
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = torch.tensor([AutoTokenizer.from_pretrained(folder)(prompt)["input_ids"]])
    with torch.no_grad():
        out[folder] = {"ids": ids, "logits": model(input_ids=ids).logits}
torch.save(out, sys.argv[2])
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "code.txt"
    path.write_text(TEXT)
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, corpus: Path) -> Path:
    """lm/test-A → lm/test-B (grown, distilled) and the lm/test-B baseline, with a BPE tokenizer."""
    cfg = raw(corpus)
    cfg["chain"], cfg["data"]["tokenizer"] = cfg["chain"][:2], "bpe"
    d = tmp_path_factory.mktemp("run")
    train_run(config_from_dict(cfg), d, progress=False)
    return d


def loose_checkpoint(path: Path, name: str = "lm/test-A") -> Path:
    torch.manual_seed(0)
    return save_checkpoint(path, state_dict=create_lm(name).state_dict(), model_config=get_lm_config(name),
                           lineage={})


def compt_logits(checkpoint: Path, ids: torch.Tensor) -> torch.Tensor:
    ckpt = load_checkpoint(checkpoint)
    with torch.no_grad():
        return create_lm(ckpt.model_config, state_dict=ckpt.state_dict).eval()(input_ids=ids).logits


def test_export_run_loads_in_plain_transformers_with_same_logits(run_dir: Path, tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    members = run_members(run_dir)
    assert [(m.key, m.methods) for m in members] == [("chain/01-lm_test-A", ("chain", "individual")),
                                                     ("chain/02-lm_test-B", ("chain",)),
                                                     ("baselines/lm_test-B", ("individual",))]
    assert main(["export", str(run_dir), "--out", str(tmp_path / "x")]) == 0
    index = json.loads((tmp_path / "x/members.json").read_text())
    assert [m["key"] for m in index["members"]] == [m.key for m in members]
    folders = [tmp_path / "x" / m.key for m in members]
    for m, folder in zip(members, folders):
        info = json.loads((folder / "compt_member.json").read_text())
        assert info["model"] == m.model and info["methods"] == list(m.methods)
        assert info["source_sha256"] == sha256_file(run_dir / m.key / "final.pt")
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out.pt"
    subprocess.run([sys.executable, "-c", PLAIN_TRANSFORMERS, PROMPT, str(out), *map(str, folders)], check=True,
                   env=env, cwd=tmp_path)
    got = torch.load(out, weights_only=True)
    want_ids = Tokenizer.from_file(str(run_dir / "data/tokenizer.json")).encode(PROMPT).ids
    assert len(want_ids) < len(PROMPT.encode())  # BPE merges, not bytes
    for m, folder in zip(members, folders):
        ids = got[str(folder)]["ids"]
        assert ids[0].tolist() == want_ids
        torch.testing.assert_close(got[str(folder)]["logits"], compt_logits(run_dir / m.key / "final.pt", ids),
                                   rtol=0, atol=1e-5)


def test_export_single_checkpoint_into_dir(run_dir: Path, tmp_path: Path, capsys) -> None:
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    ckpt = loose_checkpoint(tmp_path / "lm.pt")
    assert main(["export", str(ckpt), "--out", str(tmp_path / "hf")]) == 0
    assert "AutoModelForCausalLM" in capsys.readouterr().out
    names = {p.name for p in (tmp_path / "hf").iterdir()}
    assert {"config.json", "model.safetensors", "compt_member.json"} <= names and "tokenizer.json" not in names
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    state = load_checkpoint(ckpt).state_dict
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    member = export_checkpoint(run_dir / "chain/02-lm_test-B/final.pt", tmp_path / "m", methods=("chain",))
    run_ids = Tokenizer.from_file(str(run_dir / "data/tokenizer.json")).encode(PROMPT).ids
    assert Tokenizer.from_file(str(member / "tokenizer.json")).encode(PROMPT).ids == run_ids
    assert json.loads((member / "compt_member.json").read_text())["lineage"]["operator"] == "preserve"


def test_eval_reproduces_the_trainers_held_out_loss(run_dir: Path, corpus: Path, tmp_path: Path) -> None:
    """Same corpus, the run's BPE tokenizer (found from the checkpoint) and --eval-samples = data.eval_samples."""
    out = tmp_path / "r.json"
    for key in ("chain/02-lm_test-B", "baselines/lm_test-B"):
        assert main(["eval", str(run_dir / key / "final.pt"), "--data", "text", "--data-path", str(corpus),
                     "--eval-samples", "8", "--batch-size", "3", "--json", str(out)]) == 0
        payload = json.loads(out.read_text())
        recorded = json.loads((run_dir / key / "result.json").read_text())["history"][-1]
        metrics = payload["metrics"]
        assert metrics["val_loss"] == pytest.approx(recorded["val_loss"], abs=1e-5)
        assert metrics["val_ppl"] == pytest.approx(recorded["val_ppl"], rel=1e-5)
        assert metrics["tokens"] == 16 * metrics["windows"] and metrics["windows"] == 8
        assert "bits_per_byte" not in metrics and payload["model"] == "lm/test-B"
        trained = load_checkpoint(run_dir / key / "final.pt").lineage["tokenizer"]
        assert payload["data"]["tokenizer"] == trained and trained["kind"] == "bpe"


def test_eval_of_a_runs_own_checkpoint_defaults_to_the_windows_the_run_held_out(run_dir: Path, corpus: Path,
                                                                               tmp_path: Path) -> None:
    key, out = "chain/02-lm_test-B", tmp_path / "r.json"
    assert main(["eval", str(run_dir / key / "final.pt"), "--data", "text", "--data-path", str(corpus),
                 "--json", str(out)]) == 0    # no --eval-samples: the run's 8, not 1000
    metrics = json.loads(out.read_text())["metrics"]
    recorded = json.loads((run_dir / key / "result.json").read_text())["history"][-1]
    assert metrics["windows"] == 8 and metrics["val_loss"] == pytest.approx(recorded["val_loss"], abs=1e-5)


def test_eval_byte_level_equals_hand_cross_entropy(tmp_path: Path, capsys) -> None:
    text = TEXT[:700]
    (tmp_path / "t.txt").write_text(text)
    ckpt = loose_checkpoint(tmp_path / "lm.pt")
    assert main(["eval", str(ckpt), "--data", "text", "--data-path", str(tmp_path / "t.txt"),
                 "--eval-samples", "3", "--probe-samples", "0", "--json", str(tmp_path / "r.json")]) == 0
    assert "bits_per_byte" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "r.json").read_text())["metrics"]
    tokens = torch.tensor([*text.encode(), 256])          # bytes, then <eos>
    start = len(tokens) - (3 * 16 + 1)                    # the last 3 windows: 3 · context + 1 tokens
    windows = torch.stack([tokens[a:a + 17] for a in range(start, len(tokens) - 16, 16)])
    logits = compt_logits(ckpt, windows[:, :-1])
    nll = -logits.log_softmax(-1).gather(-1, windows[:, 1:, None]).squeeze(-1)
    assert metrics["windows"] == len(windows) == 3 and metrics["tokens"] == nll.numel()
    assert metrics["val_loss"] == pytest.approx(nll.mean().item(), abs=1e-5)
    assert metrics["val_loss"] == pytest.approx(F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten()).item(),
                                                abs=1e-5)
    assert metrics["bits_per_byte"] == pytest.approx(metrics["val_loss"] / math.log(2), rel=1e-9)
    assert metrics["val_ppl"] == pytest.approx(math.exp(metrics["val_loss"]), rel=1e-9)


@pytest.mark.parametrize("extra,match", [
    ([], "holds a language model (lm/test-A): evaluate it with --data text"),
    (["--data", "text", "--probe-samples", "5"], "--probe-samples: CLIP evaluation options"),
    (["--data", "text", "--model", "lm/test-A"], "--model: CLIP evaluation options"),
    (["--data", "text", "--benchmark", "wds/x"], "--benchmark: CLIP evaluation options"),
    (["--data", "text", "--tokenizer", "/no/such.json"], "--tokenizer /no/such.json: no such file"),
    (["--data", "text", "--data-path", "/no/such/text"], "text data not found"),
    (["--benchmark", "wds/x"], "is a file"),
])
def test_eval_lm_checkpoint_errors(tmp_path: Path, capsys, extra: list[str], match: str) -> None:
    ckpt = loose_checkpoint(tmp_path / "lm.pt")
    assert main(["eval", str(ckpt), *extra]) == 2
    assert match in capsys.readouterr().err


def test_wrong_kind_errors(run_dir: Path, corpus: Path, tmp_path: Path, capsys) -> None:
    cfg = get_model_config("test/A")
    clip = save_checkpoint(tmp_path / "clip.pt", state_dict=create_model(cfg).state_dict(), model_config=cfg)
    assert main(["eval", str(clip), "--data", "text", "--data-path", str(corpus)]) == 2
    assert "is not a language-model checkpoint" in capsys.readouterr().err
    assert main(["eval", str(clip), "--tokenizer", str(run_dir / "data/tokenizer.json")]) == 2
    assert "--tokenizer is for language-model checkpoints" in capsys.readouterr().err
    assert main(["eval", str(run_dir), "--benchmark", "wds/x", "--dataset-root", str(tmp_path)]) == 2
    assert "is a language-model run" in capsys.readouterr().err
    lm = loose_checkpoint(tmp_path / "lm.pt")
    assert main(["export", str(lm), "--out", str(tmp_path / "o"), "--model", "lm/test-A"]) == 2
    assert "language-model checkpoint (lm/test-A) with its own config; drop --model" in capsys.readouterr().err


def test_eval_refuses_to_score_a_runs_training_windows(run_dir: Path, corpus: Path, capsys) -> None:
    ckpt = run_dir / "chain/02-lm_test-B/final.pt"
    assert main(["eval", str(ckpt), "--data", "text", "--data-path", str(corpus), "--eval-samples", "9"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "more than the 8 windows run" in err and "--eval-samples 8 or less" in err


def test_eval_refuses_a_tokenizer_the_checkpoint_was_not_trained_with(run_dir: Path, corpus: Path, tmp_path: Path,
                                                                      capsys) -> None:
    spec = json.loads((run_dir / "data/tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    a, b = list(vocab)[100], list(vocab)[101]
    vocab[a], vocab[b] = vocab[b], vocab[a]           # same size, another encoding
    other = tmp_path / "other.json"
    other.write_text(json.dumps(spec))
    ckpt = run_dir / "chain/02-lm_test-B/final.pt"
    args = ["eval", str(ckpt), "--data", "text", "--data-path", str(corpus), "--eval-samples", "8", "--tokenizer"]
    assert main([*args, str(other)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "was trained with another tokenizer" in err and str(other) in err
    assert main([*args, str(run_dir / "data/tokenizer.json")]) == 0     # its own, as a bare file
