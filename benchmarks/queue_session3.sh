#!/usr/bin/env bash
# The runs of the third session, one after another (never two CPU jobs at once: wall-clock is measured).
set -u
cd "$(dirname "$0")/.."
PY=.venv/bin/python
while pgrep -f "experiments.py fashion" >/dev/null; do sleep 5; done
$PY benchmarks/experiments.py main --seeds 0 1 --fresh
$PY benchmarks/experiments.py openclipart --seeds 0
$PY benchmarks/experiments.py paper_regime --seeds 0
$PY benchmarks/experiments.py paper_regime --seeds 1
$PY benchmarks/experiments.py fashion --seeds 1
$PY benchmarks/experiments.py openclipart --seeds 1
for e in transfer growth_op distill_loss alpha epochs; do $PY benchmarks/experiments.py $e --seeds 1; done
echo QUEUE DONE
