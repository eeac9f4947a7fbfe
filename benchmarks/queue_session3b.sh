#!/usr/bin/env bash
# Second queue of the third session: starts when the first has finished (one CPU job at a time).
set -u
cd "$(dirname "$0")/.."
PY=.venv/bin/python
while pgrep -f "queue_session3[.]sh" >/dev/null || pgrep -f "benchmarks/experiments.py" >/dev/null; do sleep 5; done
$PY benchmarks/experiments.py stage_lr --seeds 0 1
$PY benchmarks/experiments.py paper_regime --seeds 0
$PY benchmarks/experiments.py fashion_wide --seeds 0
$PY benchmarks/experiments.py paper_regime --seeds 1
$PY benchmarks/experiments.py fashion_wide --seeds 1
echo QUEUE B DONE
