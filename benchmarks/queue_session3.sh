#!/usr/bin/env bash
# The runs of the third session, one after another (never two CPU jobs at once: wall-clock is measured).
set -u
cd "$(dirname "$0")/.."
PY=.venv/bin/python
while pgrep -f "benchmarks/experiments.py" >/dev/null; do sleep 5; done
$PY benchmarks/experiments.py stage_lr --seeds 0
$PY benchmarks/experiments.py paper_regime --seeds 0 1
$PY benchmarks/experiments.py fashion --seeds 0 1
$PY benchmarks/experiments.py openclipart --seeds 1
for e in transfer growth_op alpha stage_lr distill_loss epochs; do $PY benchmarks/experiments.py $e --seeds 1; done
echo QUEUE DONE
