#!/usr/bin/env bash
# Every small-scale CoM-PT experiment with the seeds docs/results.md reports, then docs/results.md.
# About 2.5 hours on 2 idle CPU cores (stages shared between variants are trained once and copied).
# Run nothing else on the machine meanwhile: wall-clock is measured. `main` is retrained from scratch
# (--fresh) so that its wall-clock columns are a clean side-by-side measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
$PY benchmarks/experiments.py main --seeds 0 1 --fresh
$PY benchmarks/experiments.py paper_regime --seeds 0 1
for exp in transfer growth_op distill_loss alpha stage_lr epochs fashion openclipart; do
  $PY benchmarks/experiments.py "$exp" --seeds 0 1
done
for exp in prepend family_size; do
  $PY benchmarks/experiments.py "$exp" --seeds 0
done
$PY benchmarks/make_results.py
