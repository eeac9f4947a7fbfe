"""Run records name paths relative to the run: a run directory moved, copied or committed elsewhere still reads,
reports and resumes, and the committed summaries under benchmarks/runs hold no path of the machine that made them."""

import json
import shutil
from pathlib import Path

from compt import chain as chain_mod
from compt.config import config_from_dict
from compt.report import write_report
from compt.train.trainer import load_result

ROOT = Path(__file__).resolve().parents[1]
RAW = {"name": "rec", "baseline_epochs": 1, "baselines": False,
       "data": {"kind": "synthetic", "num_samples": 32, "eval_samples": 16, "probe_samples": 0},
       "train": {"batch_size": 16, "warmup_steps": 1, "stage_warmup_steps": 1},
       "chain": [{"model": "test/A", "epochs": 1}, {"model": "test/B", "epochs": 1, "growth": "preserve"}]}


def test_a_runs_records_are_relative_and_a_moved_run_reads_and_reports(tmp_path: Path) -> None:
    chain_mod.train_run(config_from_dict(RAW), tmp_path / "a" / "run", progress=False)
    grown = tmp_path / "a" / "run" / "chain" / "02-test_B"
    assert json.loads((grown / "result.json").read_text())["checkpoint"] == "final.pt"
    assert json.loads((grown / "lineage.json").read_text())["parent"] == "chain/01-test_A/final.pt"

    moved = tmp_path / "b" / "elsewhere"
    shutil.move(tmp_path / "a" / "run", moved)
    result = load_result(moved / "chain" / "02-test_B")
    assert result is not None and result.checkpoint == moved / "chain" / "02-test_B" / "final.pt"
    again = chain_mod.train_run(config_from_dict(RAW), moved, progress=False)   # finished: nothing retrains
    assert Path(again["chain-2"]["checkpoint"]) == result.checkpoint
    out, _ = write_report([moved])
    report = json.loads((out / "report.json").read_text())
    assert report["runs"] == [".."] and report["plots"] and all("/" not in p for p in report["plots"])


def test_an_older_result_with_an_absolute_checkpoint_path_still_reads(tmp_path: Path) -> None:
    chain_mod.train_run(config_from_dict({**RAW, "chain": RAW["chain"][:1]}), tmp_path, progress=False)
    stage = tmp_path / "chain" / "01-test_A"
    raw = json.loads((stage / "result.json").read_text())
    (stage / "result.json").write_text(json.dumps({**raw, "checkpoint": str((stage / "final.pt").resolve())}))
    assert load_result(stage).checkpoint == (stage / "final.pt").resolve()


def _strings(obj: object) -> list[str]:
    if isinstance(obj, dict):
        return [s for k, v in obj.items() if k != "data" for s in _strings(v)]   # "data": the corpus's own files
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return [obj] if isinstance(obj, str) else []


def test_committed_run_summaries_name_no_absolute_path() -> None:
    records = [p for p in (ROOT / "benchmarks" / "runs").rglob("*.json") if p.parent.name != "report"]
    assert len(records) > 100
    absolute = [(str(p.relative_to(ROOT)), s) for p in records for s in _strings(json.loads(p.read_text()))
                if s.startswith(("/work/", "/tmp/", "/home/"))]
    assert not absolute, absolute[:5]
