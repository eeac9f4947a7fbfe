#!/usr/bin/env bash
# Second queue of the third session: starts when the first has finished (one CPU job at a time).
set -u
cd "$(dirname "$0")/.."
PY=.venv/bin/python
while pgrep -f queue_session3.sh >/dev/null; do sleep 10; done
$PY benchmarks/experiments.py stage_lr --seeds 0 1
$PY benchmarks/experiments.py fashion --seeds 0
$PY benchmarks/experiments.py openclipart --seeds 0
echo QUEUE B DONE
