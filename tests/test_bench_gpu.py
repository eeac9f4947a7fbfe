"""benchmarks/bench_gpu.py runs end to end on test-size models (keeps the GPU benchmark from rotting)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_gpu  # noqa: E402


def test_bench_gpu_runs_on_test_models(tmp_path: Path) -> None:
    out = tmp_path / "gpu.md"
    report = bench_gpu.main(["--size", "test", "--steps", "4", "--out", str(out)])
    assert out.read_text() == report
    rows = [r for r in report.splitlines() if r.startswith("| ") and not r.startswith("| case")]
    cases, workers = [r.split(" | ")[0][2:] for r in rows], bench_gpu.resolve_workers(-1)
    assert cases == ["bare open_clip", "compt plain"] * 2 + [
        "compt plain", "distill B → C, live teacher", "distill B → C, cache",
        "end to end: wds shards, indexed reader", f"indexed reader alone ({workers} workers)",
        "end to end: wds shards, webdataset stream", f"webdataset stream alone ({workers} workers)"]
    assert all(float(r.split(" | ")[3]) > 0 for r in rows)  # images/s


def test_mfu_peak_table_names_the_lent_gpus() -> None:
    peaks = dict(bench_gpu.PEAK_BF16)
    assert peaks["H100"] == peaks["H200"] == 989e12 and peaks["H100 PCIe"] < peaks["H100"]
    assert bench_gpu.train_flops("test/B", "test/A") > bench_gpu.train_flops("test/B")
