"""benchmarks/gpu_check.py runs on CPU at test size and says which CUDA-only parts it skipped."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import gpu_check  # noqa: E402


def test_gpu_check_on_cpu_reports_the_skipped_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if gpu_check.cuda():
        pytest.skip("on a GPU nothing is skipped: run benchmarks/gpu_check.py itself")
    # bench_gpu.py at test size is tests/test_bench_gpu.py's; here only how its report is folded in
    monkeypatch.setattr(gpu_check.bench_gpu, "main", lambda argv: f"# bench\n\n| case |\n{' '.join(argv)}\n")
    out = tmp_path / "gpu_check.md"
    report, passed = gpu_check.main(["--size", "test", "--out", str(out)])
    assert passed and out.read_text() == report
    assert "**This was not run on a GPU**" in report
    lines = report.splitlines()
    start = lines.index("| check | status | seconds |") + 2
    rows = lines[start:lines.index("", start)]
    table = {row.split(" | ")[0][2:]: row.split(" | ")[1] for row in rows}
    assert table == {"sync": "skipped", "chain": "ok", "fsdp": "skipped", "bench": "ok"}
    assert "**skipped (no CUDA):** sync debug mode needs a GPU; the steps ran" in report
    assert "**CUDA parts skipped (no CUDA):** ran on gloo" in report
    assert "**inductor skipped (no CUDA):** compiled with the eager backend" in report
    assert "FSDP2 module: True" in report and "4 stages trained, 4 evaluated" in report
    assert "- recompile limit hit: 0 times" in report
    assert "### bench" in report and "--size test --steps 4" in report
