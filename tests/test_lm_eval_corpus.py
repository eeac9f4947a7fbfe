"""`compt eval --data tokens|documents`: a run member's held-out loss on its own token or document corpus equals
the val_loss the run recorded (same split: the run's data.seed and data.eval_samples); bad requests are one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_lm_shards_run import make_data, run_config

from compt.chain import train_run
from compt.cli import main
from compt.config import config_from_dict


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lm-eval-data")
    make_data(root)
    return root


def one_member(data: Path, kind: str) -> dict:
    raw = run_config(data, kind)
    raw["chain"] = raw["chain"][:1]
    raw["data"]["seed"] = 3   # a split seed other than the default: eval must take the run's
    return raw


@pytest.mark.parametrize("kind", ["tokens", "documents"])
def test_eval_on_the_runs_corpus_equals_the_recorded_held_out_loss(data: Path, kind: str, tmp_path: Path) -> None:
    raw = one_member(data, kind)
    train_run(config_from_dict(raw), tmp_path / "run", progress=False)
    stage = tmp_path / "run" / "chain" / "01-lm_test-A"
    recorded = json.loads((stage / "result.json").read_text())["metrics"]["val_loss"]
    out = tmp_path / "eval.json"
    assert main(["eval", str(stage / "final.pt"), "--data", kind, "--data-path", raw["data"]["path"],
                 "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["metrics"]["windows"] == 6 and got["data"]["kind"] == kind
    assert got["metrics"]["val_loss"] == pytest.approx(recorded, rel=1e-6)
    # another split seed scores other windows: the match above is not an accident of the corpus
    loose = tmp_path / "loose.pt"
    loose.write_bytes((stage / "final.pt").read_bytes())
    assert main(["eval", str(loose), "--data", kind, "--data-path", raw["data"]["path"], "--eval-samples", "6",
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["metrics"]["val_loss"] != pytest.approx(recorded, rel=1e-6)


def test_a_corpus_kind_without_a_path_is_one_line(data: Path, tmp_path: Path, capsys) -> None:
    raw = one_member(data, "tokens")
    train_run(config_from_dict(raw), tmp_path / "run", progress=False)
    ckpt = tmp_path / "run" / "chain" / "01-lm_test-A" / "final.pt"
    capsys.readouterr()
    assert main(["eval", str(ckpt), "--data", "tokens"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["compt eval: error: --data tokens needs --data-path (a folder, file or glob of its files)"]
