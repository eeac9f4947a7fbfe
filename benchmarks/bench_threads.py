"""Training step time against the torch thread count and OpenMP's wait policy, on a possibly shared CPU.

    .venv/bin/python benchmarks/bench_threads.py [--model tiny/ViT-T] [--batch 64] [--steps 8]
                                                 [--out benchmarks/results/threads.md]

Each setting runs in a fresh process (OMP_WAIT_POLICY is read once, when torch loads its OpenMP runtime):
a seeded `tiny` student, a fixed random batch, `--steps` AdamW steps of compt's CLIP task. Reported: the
median step time after one warm-up step, and the loss after the last step — which shows whether the
numbers themselves depend on the thread count. The machine's load average is printed with the table,
since the point is what happens when other processes compete for the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = [  # (label, torch threads or 0 = compt's automatic default, OMP_WAIT_POLICY or "" = OpenMP default)
    ("1 thread", 1, ""),
    ("all CPUs, OpenMP default wait", 0, ""),
    ("all CPUs, OMP_WAIT_POLICY=PASSIVE", 0, "PASSIVE"),
]


def worker(model: str, batch: int, steps: int, threads: int) -> dict:
    """One setting, in this process: step times (s) and the final loss."""
    import torch

    from compt.clip.models import create_model, get_model_config
    from compt.clip.tasks import build_task
    from compt.config import TrainConfig
    from compt.threads import configure_threads
    from compt.train.optim import build_optimizer

    info = configure_threads(threads)
    cfg = get_model_config(model)
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    task = build_task(create_model(cfg))
    images = torch.randn(batch, 3, cfg.vision.image_size, cfg.vision.image_size, generator=g)
    tokens = torch.randint(1, 49000, (batch, 1, cfg.text.context_length), generator=g)
    tokens[:, :, -1] = 49407
    opt = build_optimizer(task, TrainConfig(lr=1e-3))
    times, loss = [], float("nan")
    for _ in range(steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out = task(images, tokens, torch.arange(batch))
        out["loss"].backward()
        opt.step()
        task.post_step()
        times.append(time.perf_counter() - t0)
        loss = out["loss"].item()
    return {"threads": info["threads"], "times": times, "loss": loss}


def run_setting(args: argparse.Namespace, threads: int, policy: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    cmd = [sys.executable, __file__, "--worker", "--model", args.model, "--batch", str(args.batch),
           "--steps", str(args.steps), "--threads", str(threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="tiny/ViT-T")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--worker", action="store_true")
    p.add_argument("--out", default="")
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.model, args.batch, args.steps, args.threads)))
        return
    load = os.getloadavg()
    rows = []
    for label, threads, policy in SETTINGS:
        r = run_setting(args, threads, policy)
        step = statistics.median(r["times"][1:])
        rows.append(f"| {label} | {r['threads']} | {policy or 'default'} | {1000 * step:.0f} | "
                    f"{1000 * max(r['times'][1:]):.0f} | {r['loss']:.6f} |")
        print(rows[-1], flush=True)
    table = "\n".join(["| setting | torch threads | OMP_WAIT_POLICY | median step (ms) | slowest step (ms) | "
                       "loss after last step |", "|---|---:|---|---:|---:|---:|", *rows])
    head = (f"{args.model}, batch {args.batch}, {args.steps} steps per setting; {os.cpu_count()} CPUs "
            f"({platform.processor() or platform.machine()}), load average before the run "
            f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min)")
    print(head)
    print(table)
    if args.out:
        Path(args.out).write_text(f"{head}\n\n{table}\n")


if __name__ == "__main__":
    main()
