"""Wall-clock conditions: what a stage records, when it counts as contended, and how the report flags it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w
import torch
from helpers import stage_kwargs

from compt.report import write_report
from compt.train import load_result, train_stage
from compt.train.conditions import contention

KEYS = {"device", "device_name", "threads", "cpu_count", "load_start", "load_end", "session_wall_s", "cpu_s",
        "cpu_utilisation", "runqueue_wait", "contended"}


def conditions(*, wait: float | None, util: float, device: str = "cpu", load: float = 1.0) -> dict:
    return {"device": device, "device_name": "test", "threads": 2, "cpu_count": 2, "load_start": load,
            "load_end": load, "session_wall_s": 10.0, "cpu_s": 20 * util, "cpu_utilisation": util,
            "runqueue_wait": wait}


def test_contention_rules() -> None:
    assert contention(conditions(wait=0.01, util=0.97)) == []
    assert contention(conditions(wait=0.01, util=0.30)) == []     # idle threads, not waiting: not contention
    why = contention(conditions(wait=0.40, util=0.55, load=3.5))
    assert why == ["its threads waited for a CPU 40 % of the time (CPU time / (wall × 2 threads) = 0.55; "
                   "load average 3.5 → 3.5 on 2 cores)"]
    assert contention(conditions(wait=None, util=0.55))           # no schedstat: utilisation decides on CPU
    assert contention(conditions(wait=None, util=0.95)) == []
    assert contention(conditions(wait=None, util=0.05, device="cuda")) == []
    assert contention(conditions(wait=None, util=0.05, device="cuda", load=5.0))  # host oversubscribed
    own = contention({**conditions(wait=0.5, util=0.5), "threads": 4})             # oversubscribed by itself
    assert own[0].endswith("; 4 threads on 2 cores)")


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or not Path("/proc/self/schedstat").exists(),
                    reason="needs Linux CPU affinity and schedstat")
def test_probe_sees_another_process_on_its_cpu() -> None:
    """Two busy processes pinned to one core: each waits about half the time, and the probe says so."""
    script = """
import json, os, subprocess, sys, time
import torch
from compt.train.conditions import Probe
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
hog = subprocess.Popen([sys.executable, "-c", "import time\\nt = time.time()\\nwhile time.time() - t < 5: pass"])
time.sleep(0.2)
torch.set_num_threads(1)
probe, t = Probe(), time.perf_counter()
while time.perf_counter() - t < 0.6:
    pass
c = probe.finish(torch.device("cpu"))
hog.kill()
print(json.dumps(c))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    c = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(c) == KEYS and c["threads"] == 1 and c["device"] == "cpu"
    assert c["runqueue_wait"] > 0.3 and c["cpu_utilisation"] < 0.7 and c["contended"]


def test_stage_records_its_conditions_and_old_results_still_load(tmp_path: Path) -> None:
    result = train_stage(**stage_kwargs(tmp_path / "s", epochs=1))
    c = result.conditions
    assert set(c) == KEYS and c["threads"] == torch.get_num_threads() and c["device"] == "cpu"
    assert c["session_wall_s"] > 0 and c["cpu_s"] > 0 and c["contended"] == bool(contention(c))
    stored = json.loads((tmp_path / "s/result.json").read_text())
    assert stored["conditions"] == c and load_result(tmp_path / "s").conditions == c
    del stored["conditions"]  # a result.json written before compt recorded conditions
    (tmp_path / "s/result.json").write_text(json.dumps(stored))
    assert load_result(tmp_path / "s").conditions == {}


# ----------------------------------------------------------------------------------------------- report
STAGES = {"chain/01-test_A": (1e9, 10.0), "chain/02-test_B": (0.5e9, 4.0), "baselines/test_B": (2e9, 30.0)}


def write_run(d: Path, conds: dict[str, dict | None]) -> Path:
    """A finished two-member run (member 1's baseline is chain stage 1) with the given stage conditions."""
    raw = {"name": "toy", "baselines": True, "data": {"kind": "csv", "path": "x.csv"},
           "chain": [{"model": "test/A", "epochs": 4}, {"model": "test/B", "epochs": 1}]}
    d.mkdir(parents=True)
    (d / "config.toml").write_text(tomli_w.dumps(raw))
    for stage, (flops, wall) in STAGES.items():
        (d / stage).mkdir(parents=True)
        res = {"checkpoint": "final.pt", "metrics": {"retrieval_r1": 5.0}, "steps": 4, "samples": 64,
               "train_flops": flops, "wall_clock_s": wall, "history": []}
        if conds.get(stage) is not None:
            res["conditions"] = conds[stage]
        (d / stage / "result.json").write_text(json.dumps(res))
    return d


CLEAN = conditions(wait=0.02, util=0.96)
BUSY = conditions(wait=0.45, util=0.5, load=3.9)


def test_clean_run_prints_the_wall_clock_acceleration_as_a_measurement(tmp_path: Path) -> None:
    out, md = write_report([write_run(tmp_path / "r", dict.fromkeys(STAGES, CLEAN))])
    fam = json.loads((out / "report.json").read_text())["family"]
    assert fam["acceleration_wall"]["mean"] == pytest.approx((10 + 30) / (10 + 4))
    assert fam["acceleration_wall_caveat"] is None and fam["chain_wall_pct_caveat"] is None
    assert "family acceleration (wall-clock, measured: same machine, same run, no stage contended): 2.86×" in md
    assert "†" not in md and "indicative" not in md and "| 10.0 |" in md


def test_contended_stages_are_flagged_with_the_reason(tmp_path: Path) -> None:
    out, md = write_report([write_run(tmp_path / "r", {**dict.fromkeys(STAGES, CLEAN), "baselines/test_B": BUSY})])
    summary = json.loads((out / "report.json").read_text())
    status = {(m["model"], m["method"]): m["wall_status"] for m in summary["members"]}
    assert status == {("test/A", "chain"): "clean", ("test/A", "individual"): "clean",
                      ("test/B", "chain"): "clean", ("test/B", "individual"): "contended"}
    assert "| 30.0 † |" in md and "| 4.0 |" in md
    assert ("- † test/B individual: wall-clock measured under contention, indicative only — its threads waited "
            "for a CPU 45 % of the time (CPU time / (wall × 2 threads) = 0.50; load average 3.9 → 3.9 on 2 cores)"
            in md)
    assert ("- family acceleration (wall-clock): 2.86× — indicative only, not a measurement: 1 of the 4 stage "
            "results it uses were measured under CPU contention (test/B individual)") in md
    assert "of the largest member's individual run (indicative only, as above)" in md
    assert "wall-clock, measured" not in md


def test_results_without_conditions_say_so(tmp_path: Path) -> None:
    out, md = write_report([write_run(tmp_path / "r", {"chain/01-test_A": CLEAN})])
    assert "| 4.0 ? |" in md and "| 10.0 |" in md
    assert "? wall-clock conditions not recorded" in md
    assert "conditions not recorded for test/B chain, test/B individual" in md
    assert (out / "accuracy_vs_compute.png").is_file() and (out / "cost_breakdown.png").is_file()


def test_csv_chain_report_has_one_retrieval_panel_and_flags_contention(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's case at test size: an open_clip CSV (no class labels) → chain + baselines → `compt report`."""
    from test_data_files import COLOURS, write_csv, write_images
    from test_plots import assert_readable_compute_axis

    from compt.chain import train_run
    from compt.config import config_from_dict
    from compt.plots import accuracy_figure
    from compt.report import load_run
    from compt.train import conditions as cond

    names = write_images(tmp_path / "img", 40)
    words = ("red", "green", "blue", "yellow")
    write_csv(tmp_path / "pairs.csv", [(f"img/{n}", f"a {words[i % len(COLOURS)]} photo {i}") for i, n in
                                       enumerate(names)])
    raw = {"name": "csv", "baselines": True, "data": {"kind": "csv", "path": str(tmp_path / "pairs.csv"),
                                                      "eval_samples": 8, "cache_dir": "none"},
           "train": {"batch_size": 16, "warmup_steps": 1, "stage_warmup_steps": 1},
           "chain": [{"model": "test/A", "epochs": 1}, {"model": "test/B", "epochs": 1}]}
    run_dir = tmp_path / "run"
    train_run(config_from_dict(raw), run_dir, progress=False)
    run = load_run(run_dir)
    assert all(set(r.conditions) == KEYS for r in (*run.chain, *run.individual))
    fig = accuracy_figure([run])
    fig.canvas.draw()
    axes = [ax for ax in fig.axes if ax.get_ylabel()]
    assert [ax.get_ylabel() for ax in axes] == ["retrieval R@1 (%)"]
    assert_readable_compute_axis(axes[0])
    monkeypatch.setattr(cond, "WAIT_MAX", -1.0)          # whatever this machine's load: every stage contended
    monkeypatch.setattr(cond, "UTILISATION_MIN", 2.0)
    _, md = write_report([run_dir])
    assert "zero-shot" not in md and md.count(" † |") == 4 and "indicative only, not a measurement" in md
