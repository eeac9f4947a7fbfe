"""A resumed stage notices changed data: captions edited, rows removed, corpus files changed between a kill and
the resume are refused in one line naming what changed (`compt.datafp`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import crash_after_step

from compt.chain import train_run
from compt.config import config_from_dict
from compt.datafp import data_changes, files_fingerprint
from compt.errors import UserError


def test_fingerprint_and_changes_by_hand(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("x,y\n")
    (tmp_path / "img.png").write_bytes(b"12345")
    before = files_fingerprint(tmp_path.iterdir(), tmp_path, hashed=(".csv",))
    assert before["img.png"] == [5, ""] and len(before["a.csv"][1]) == 64
    (tmp_path / "a.csv").write_text("x,z\n")                      # same size, other captions
    (tmp_path / "img.png").unlink()
    (tmp_path / "new.png").write_bytes(b"1")
    after = files_fingerprint(tmp_path.iterdir(), tmp_path, hashed=(".csv",))
    assert data_changes(before, after) == ["new.png is new", "img.png is gone", "a.csv was edited"]


def test_a_resume_refuses_a_corpus_edited_since_the_stage_started(tmp_path: Path, monkeypatch) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"w{i} = {i} + {i % 9}\n" for i in range(400)))
    raw = {"name": "fp", "data": {"kind": "text", "path": str(corpus), "num_samples": 32, "eval_samples": 8},
           "train": {"batch_size": 8, "warmup_steps": 1, "stage_warmup_steps": 1, "lr": 3e-3},
           "chain": [{"model": "lm/test-A", "epochs": 2}]}
    crash_after_step(monkeypatch, "lm/test-A", 4)             # an epoch end: checkpointed, then killed
    with pytest.raises(RuntimeError, match="killed"):
        train_run(config_from_dict(raw), tmp_path / "run", progress=False)
    monkeypatch.undo()
    text = corpus.read_text()
    corpus.write_text(text.replace("w1 ", "v1 ", 1))              # an edit of the same size
    with pytest.raises(UserError, match="stage chain-1 \\(lm/test-A\\) started on other data: .*corpus.txt was "
                                        "edited; restore the data, or rerun the stage with --from-stage chain-1"):
        train_run(config_from_dict(raw), tmp_path / "run", progress=False)
    corpus.write_text(text)                                       # restored: it resumes
    assert train_run(config_from_dict(raw), tmp_path / "run", progress=False)["chain-1"]["steps"] == 8


def test_a_resume_refuses_edited_captions_of_a_csv_set(tmp_path: Path, monkeypatch) -> None:
    from test_data_files import write_csv, write_images

    names = write_images(tmp_path / "img", 40)
    csv = write_csv(tmp_path / "pairs.csv", [(f"img/{n}", f"a colour {i % 4} square") for i, n in enumerate(names)])
    raw = {"name": "csvfp", "data": {"kind": "csv", "path": str(csv), "eval_samples": 8, "probe_samples": 0},
           "train": {"batch_size": 16, "warmup_steps": 1, "stage_warmup_steps": 1, "lr": 2e-3},
           "chain": [{"model": "test/A", "epochs": 2}]}
    crash_after_step(monkeypatch, "test/A", 2)
    with pytest.raises(RuntimeError, match="killed"):
        train_run(config_from_dict(raw), tmp_path / "run", progress=False)
    monkeypatch.undo()
    csv.write_text(csv.read_text().replace("colour 1", "colour 7"))      # captions edited, same size
    with pytest.raises(UserError, match="started on other data: .*pairs.csv was edited"):
        train_run(config_from_dict(raw), tmp_path / "run", progress=False)
