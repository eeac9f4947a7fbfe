"""Subprocess entry of `compt eval --benchmark`: ``python -m compt.clip.bench.runner SPEC.json``.

SPEC.json is ``{"runs": [[clip_benchmark eval arguments …], …]}``. Each run goes through clip_benchmark's own
command line (``clip_benchmark.cli.main``), in this one process so that torch, open_clip and clip_benchmark
are imported once. The parent hides CUDA (``CUDA_VISIBLE_DEVICES=""``), so clip_benchmark — which has no
device flag and picks CUDA when it sees one — runs on CPU; ``--no_amp`` in every run keeps it fp32.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from clip_benchmark import cli

    from compt.clip.bench import compat

    if compat.apply():
        print("compt: clip_benchmark top-k accuracy patched for NumPy >= 2.4 (compt.clip.bench.compat)",
              file=sys.stderr)
    runs = json.loads(Path(argv[0]).read_text())["runs"]
    for args in runs:
        sys.argv = ["clip_benchmark", *args]
        cli.main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
