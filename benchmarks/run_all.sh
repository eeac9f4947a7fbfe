#!/usr/bin/env bash
# Every small-scale CoM-PT experiment, in the order the results doc reads them, then docs/results.md.
# About an hour on 2 idle CPU cores (stages shared between variants are trained once and copied).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
$PY benchmarks/experiments.py main --seeds 0 1
for exp in transfer growth_op distill_loss alpha epochs prepend; do
  $PY benchmarks/experiments.py "$exp" --seeds 0
done
$PY benchmarks/experiments.py family_size --seeds 0
$PY benchmarks/experiments.py fashion --seeds 0
$PY benchmarks/make_results.py
