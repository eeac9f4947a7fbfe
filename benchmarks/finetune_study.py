"""Does fine-tuning close the chain's gap? Fine-tune (full and linear) every member of the given runs.

    python benchmarks/finetune_study.py RUN_DIR [RUN_DIR …] [--data synthetic fashion-mnist] [--modes full linear]
                                        [--set epochs=5 …]

Each run's members are fine-tuned with `compt.finetune_run` (resumable: finished members are skipped), then the
small result JSONs are copied to ``benchmarks/runs/<run relative to runs/bench>/finetune/…`` (a run outside
``--runs-root``, e.g. ``runs/demo``: ``benchmarks/runs/<its name>/finetune/…``), the committed summaries that
``benchmarks/make_results.py`` turns into the "Does fine-tuning close the chain's gap?" section. A data set that
is not on this machine (Fashion-MNIST without Debian's package) is reported and skipped.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import compt
from compt.clip.finetune.runner import FINETUNE_DIR
from compt.errors import UserError
from compt.fields import parse_field
from compt.finetune_config import FinetuneConfig

ROOT = Path(__file__).resolve().parents[1]
SUMMARIES = ROOT / "benchmarks" / "runs"


def summary_dir(run_dir: Path, runs_root: Path, summaries: Path) -> Path:
    """Where a run's fine-tuning results are committed: the run's place under runs_root, else its name."""
    run_dir, runs_root = run_dir.resolve(), runs_root.resolve()
    rel = run_dir.relative_to(runs_root) if run_dir.is_relative_to(runs_root) else Path(run_dir.name)
    return summaries / rel


def copy_results(run_dir: Path, target: Path) -> int:
    """Copy RUN/finetune/**/*.json under target/finetune; returns how many."""
    files = sorted((run_dir / FINETUNE_DIR).glob("**/*.json"))
    for f in files:
        dest = target / FINETUNE_DIR / f.relative_to(run_dir / FINETUNE_DIR)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest)
    return len(files)


def settings_of(items: list[str]) -> dict:
    """``--set key=value`` → FinetuneConfig fields (typed as the dataclass declares them)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in FinetuneConfig.__dataclass_fields__ or key == "mode":
            raise SystemExit(f"finetune_study: --set {item!r}: use KEY=VALUE with a FinetuneConfig field")
        out[key] = parse_field(FinetuneConfig, key, value, f"--set {key}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    p.add_argument("--data", nargs="+", default=["synthetic", "fashion-mnist"], metavar="KIND[:ARG]")
    p.add_argument("--modes", nargs="+", default=["full", "linear"], choices=("full", "linear"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
                   help="a fine-tuning setting for every member, e.g. --set epochs=5 (repeatable)")
    p.add_argument("--runs-root", type=Path, default=ROOT / "runs" / "bench")
    p.add_argument("--summaries", type=Path, default=SUMMARIES)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    settings = settings_of(args.settings)
    for run_dir in args.run_dirs:
        for data in args.data:
            for mode in args.modes:
                try:
                    compt.finetune_run(run_dir, data=data, mode=mode, progress=not args.no_progress, **settings)
                except UserError as e:
                    print(f"finetune_study: {run_dir} {data} {mode}: skipped — {e}", file=sys.stderr)
        target = summary_dir(run_dir, args.runs_root, args.summaries)
        print(f"finetune_study: {copy_results(run_dir, target)} result files → {target / FINETUNE_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
