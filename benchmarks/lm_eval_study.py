"""lm-evaluation-harness on the language-model studies' runs: the ``held-out`` task for every member (issue #26).

For each run of experiment ``lm`` (`benchmarks/experiments.py lm`: ``runs/bench/lm/<variant>/seed<k>``; with
``--experiment lm_parity`` the parity study with the Hugging Face BPE) whose checkpoints exist, runs what
``compt eval RUN --lm-eval held-out`` runs (`compt.lm.harness.run_harness`: every finished member exported with
the run's tokenizer, nothing trained) and saves the run's summaries again (`experiments.save_summaries`), which
now include the small JSON files it writes — ``lm_eval/members.json``, ``lm_eval/held-out/held_out.json`` and each
member's ``lm_eval/<member>/results.json`` (not the held-out text nor the datasets cache) — under
``benchmarks/runs/<experiment>/<variant>/seed<k>/`` (`compt report` on that folder then adds the per-task tables;
`benchmarks/make_results.py` one table per run and task in its section "Language-model members on
lm-evaluation-harness"). Runs without checkpoints, or whose corpus (``data.path``, the Python 3.11 docs of Debian's
``python3.11-doc``) is missing, are listed and skipped.

    python benchmarks/lm_eval_study.py --list                 # which runs can be evaluated
    python benchmarks/lm_eval_study.py                        # all of them
    python benchmarks/lm_eval_study.py --variants lm4-preserve-kl --seeds 0 --tasks held-out
    python benchmarks/lm_eval_study.py --experiment lm_parity --seeds 0 1

Cost: per run of ``lm`` (7 members: chain 1M … 22M and the 2M, 6M, 22M baselines) 256 held-out windows of 128
tokens per member, 4.2 TFLOPs of forward passes (`compt.lm.flops`; measured on 2 busy CPU cores: 28 s per 22M
member, 7 s per 6M, 3 s per 2M) plus a few seconds of lm-eval start-up per member: about 2 minutes a run, 20
minutes for the 9 committed runs. A run of ``lm_parity`` holds 12 members (the chain and every baseline on both
target seeds; vocabulary 2,048): about 4 minutes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import experiments

from compt.errors import UserError

EXPERIMENTS = ("lm", "lm_parity")   # the language-model studies of benchmarks/experiments.py


def study_runs(variants: list[str] | None, seeds: list[int], experiment: str = "lm") -> list[tuple[str, int, Path]]:
    """(variant, seed, run folder) of the experiment's runs asked for, whether or not they exist."""
    names = [v.name for v in experiments.EXPERIMENTS[experiment].variants]
    unknown = sorted(set(variants or []) - set(names))
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)} of experiment {experiment} "
                         f"(known: {', '.join(names)})")
    return [(v, s, experiments.RUNS / experiment / v / f"seed{s}") for v in (variants or names) for s in seeds]


def why_not(run_dir: Path) -> str:
    """"" when the run can be evaluated, else why not (no run, no finished member, no corpus)."""
    from compt.config import read_run_config
    from compt.export import run_members

    if not (run_dir / "config.toml").is_file():
        return "not run here"
    try:
        run_members(run_dir)
        path = read_run_config(run_dir).data.path
    except UserError as e:
        return str(e)
    return "" if not path or Path(path).exists() else f"its corpus {path} is missing"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", choices=EXPERIMENTS, default="lm", help="which study's runs (default lm)")
    p.add_argument("--variants", nargs="+", default=None, help="only these variants of the experiment")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--tasks", default="held-out", help="lm-eval tasks, comma separated (default held-out)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--list", action="store_true", help="only list the runs and whether they can be evaluated")
    args = p.parse_args(argv)
    from compt.lm.harness import HarnessConfig, go_offline, run_harness

    go_offline()
    cfg = HarnessConfig(tasks=tuple(args.tasks.split(",")), batch_size=args.batch_size, device=args.device)
    runs = study_runs(args.variants, args.seeds, args.experiment)
    for variant, seed, run_dir in runs:
        reason = why_not(run_dir)
        print(f"{variant}/seed{seed}: {reason or 'ready'}")
        if reason or args.list:
            continue
        run_harness(run_dir, cfg)
        print(f"  lm-eval results saved under {experiments.save_summaries(run_dir) / 'lm_eval'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
