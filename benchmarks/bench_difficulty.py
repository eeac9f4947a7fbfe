"""How hard is the synthetic corpus? Train two tiny sizes briefly and compare their evaluation (issue 5).

A plain CLIP loop (AdamW, linear warmup + cosine, symmetric InfoNCE with the learnable temperature; each
step uses one randomly chosen caption slot per image) trains each model for the same number of steps on the
same data, then `compt.clip.data.evaluate` scores it on the held-out suite. The corpus is useful for comparing
family members when the larger model scores higher and neither is at 100 %.

    python benchmarks/bench_difficulty.py                                  # writes benchmarks/results/difficulty.md
    python benchmarks/bench_difficulty.py --models tiny/ViT-N tiny/ViT-S --epochs 10 --samples 4000
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from compt.clip.data import build_eval_suite, build_train_dataset, evaluate
from compt.clip.data.synthetic import COUNT_PROBS
from compt.clip.flops import model_flops
from compt.clip.models import create_model, get_model_config
from compt.clip.settings import ClipDataConfig

ROOT = Path(__file__).resolve().parents[1]
CHANCE = {"shape": 12.5, "colour": 10.0, "count": 25.0, "size": 33.3, "position": 11.1}


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup to 1, then cosine to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def train(name: str, data: ClipDataConfig, *, epochs: float, batch: int, lr: float,
          seed: int) -> tuple[torch.nn.Module, float]:
    """Train `name` from scratch on the synthetic set; returns (model, seconds)."""
    cfg = get_model_config(name)
    ds = build_train_dataset(data, cfg)
    torch.manual_seed(seed)
    model = create_model(cfg).train()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.98), eps=1e-6)
    gen = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, drop_last=True, generator=gen)
    total = int(epochs * len(loader))
    warmup = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warmup, total))
    step, start = 0, time.perf_counter()
    while step < total:
        for images, tokens, _ in loader:
            slot = torch.randint(tokens.shape[1], (tokens.shape[0],), generator=gen)
            img, txt, scale = model(images, tokens[torch.arange(len(tokens)), slot])
            logits = scale * img @ txt.T
            labels = torch.arange(len(logits))
            loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            step += 1
            if step % 50 == 0:
                print(f"  {name} step {step}/{total} loss {loss.item():.3f}", flush=True)
            if step >= total:
                break
    return model, time.perf_counter() - start


def table(rows: list[dict], tasks: list[str]) -> list[str]:
    head = ["model", "params", "train s"] + [f"zs {t}" for t in tasks] + ["zs mean", "i2t R@1", "t2i R@1",
                                                                         "i2t R@5", "t2i R@5", "probe mean"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    chance = ["chance", "", ""] + [f"{CHANCE[t]:.1f}" for t in tasks] + ["", "0.1", "0.1", "0.5", "0.5", ""]
    for r in rows:
        m = r["metrics"]
        cells = [r["model"], f"{r['params'] / 1e6:.2f} M", f"{r['seconds']:.0f}"]
        cells += [f"{m[f'zeroshot/{t}/top1']:.1f}" for t in tasks]
        cells += [f"{m[k]:.1f}" for k in ("zeroshot_top1", "retrieval/i2t_r1", "retrieval/t2i_r1",
                                           "retrieval/i2t_r5", "retrieval/t2i_r5", "linear_probe_top1")]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("| " + " | ".join(chance) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny/ViT-N", "tiny/ViT-S"])
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--captions", type=int, default=3, help="caption slots per image")
    parser.add_argument("--epochs", type=float, default=10)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "difficulty.md"))
    args = parser.parse_args()
    data = ClipDataConfig(num_samples=args.samples, captions_per_image=args.captions, eval_samples=1000,
                      probe_samples=2000, seed=args.seed)
    rows = []
    for name in args.models:
        model, seconds = train(name, data, epochs=args.epochs, batch=args.batch, lr=args.lr, seed=args.seed)
        metrics = evaluate(model, build_eval_suite(data, get_model_config(name)))
        rows.append({"model": name, "params": model_flops(get_model_config(name)).params, "seconds": seconds,
                     "metrics": metrics})
        print(name, {k: round(v, 1) for k, v in metrics.items() if "/" not in k}, flush=True)
    tasks = list(CHANCE)
    command = (f"python benchmarks/bench_difficulty.py --models {' '.join(args.models)} --samples {args.samples} "
               f"--captions {args.captions} --epochs {args.epochs:g} --batch {args.batch} --lr {args.lr:g} "
               f"--seed {args.seed}")
    text = "\n".join([
        "# Synthetic corpus difficulty", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); load average at the end {os.getloadavg()[0]:.1f} "
        "(the machine was shared, so seconds are indicative only).",
        f"Command: `{command}`.",
        f"Data: {args.samples} synthetic training scenes (32×32), {args.captions} caption slots (one random slot "
        "per image per step), 1000 held-out scenes for zero-shot and retrieval, 2000 training scenes for the "
        "linear probes. Same steps, data order and seed for every model. Zero-shot top-1 (%) per task; "
        f"count classes are imbalanced (majority class = {100 * COUNT_PROBS[0]:.0f} %).", "",
        *table(rows, tasks), "", "Linear probe top-1 (%) on frozen image embeddings, per task:", "",
        "| model | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks),
        *[f"| {r['model']} | " + " | ".join(f"{r['metrics'][f'linear_probe/{t}/top1']:.1f}" for t in tasks) + " |"
          for r in rows], ""])
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
