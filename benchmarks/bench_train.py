"""Step time of compt's trainer against a bare hand-written open_clip step, and the cost of distillation.

    .venv/bin/python benchmarks/bench_train.py [--model tiny/ViT-B] [--teacher tiny/ViT-S] [--batch 128]
                                               [--steps 24] [--out benchmarks/results/train.md]

Interleaved in one process: `train_stage` runs with an ``on_step`` hook, and the hook runs one bare open_clip
step (``model(images, texts)`` → ``open_clip.loss.ClipLoss`` → backward → AdamW step → logit-scale clamp) on
a separate copy of the same model and a batch of the same size. Our step time is the time between two hook
calls (data loading, forward/backward, optimizer, logging — everything the loop does), the bare time is
measured inside the hook, so both see the same machine state step after step. The first `--skip` steps
(allocator and thread-pool warm-up) and the last step (final checkpoint) are left out; medians are reported.

Three stages run this way: plain CLIP, distillation from a live teacher, distillation with the teacher
cache (whose one-off fill pass is timed separately).
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import tempfile
import time
from pathlib import Path

import open_clip
import torch
from torch.utils.data import Dataset

from compt.clip.models import ModelConfig, create_model, get_model_config
from compt.clip.teacher_cache import fill_teacher_cache
from compt.config import MemberConfig, TrainConfig
from compt.distributed import DistInfo
from compt.stage import resolve_spec
from compt.train import train_stage
from compt.train.optim import build_optimizer


class RandomPairs(Dataset):
    """In-memory random images and token sequences (EOT last), deterministic per index."""

    deterministic = True

    def __init__(self, n: int, cfg: ModelConfig) -> None:
        g = torch.Generator().manual_seed(0)
        size, ctx = cfg.vision.image_size, cfg.text.context_length
        self.images = torch.randn(n, 3, size, size, generator=g)
        self.tokens = torch.randint(1, 1000, (n, 1, ctx), generator=g)
        self.tokens[:, :, -1] = 49407

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.images[i], self.tokens[i], i


class BareStep:
    """The hand-written open_clip training step the trainer is compared with."""

    def __init__(self, cfg: ModelConfig, train: TrainConfig, data: RandomPairs, batch: int) -> None:
        torch.manual_seed(1)
        self.model = create_model(cfg).train()
        self.opt = build_optimizer(self.model, train)
        self.loss = open_clip.loss.ClipLoss()
        self.images, self.texts = data.images[:batch], data.tokens[:batch, 0]

    def __call__(self) -> float:
        start = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        image, text, scale = self.model(self.images, self.texts)
        self.loss(image, text, scale).backward()
        self.opt.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, math.log(100))
        return time.perf_counter() - start


def interleaved(args: argparse.Namespace, data: RandomPairs, teacher: tuple | None, cache: bool,
                out: Path) -> dict[str, float]:
    """Medians of our and the bare step time (s), of their per-pair ratio, and the ratio of the minima."""
    cfg = get_model_config(args.model)
    train = TrainConfig(batch_size=args.batch, warmup_steps=10, stage_warmup_steps=10, teacher_cache=cache,
                        log_every_steps=10)
    bare = BareStep(cfg, train, data, args.batch)
    ours, base, mark = [], [], [time.perf_counter()]

    def hook(step: int) -> None:
        ours.append(time.perf_counter() - mark[0])
        base.append(bare())
        mark[0] = time.perf_counter()

    member = MemberConfig(model=args.model, epochs=args.steps * args.batch / len(data), distill="fd")
    torch.manual_seed(0)
    spec = resolve_spec(model=cfg, member=member, train=train, from_scratch=teacher is None,
                        parent=teacher[0] if teacher else None, samples=len(data), captions=1)
    train_stage(spec, out_dir=out, dataset=data, teacher_state=teacher[1] if teacher else None, progress=False,
                on_step=hook)
    ours, base = ours[args.skip:args.steps - 1], base[args.skip:args.steps - 1]
    ratios = [a / b for a, b in zip(ours, base, strict=True)]
    return {"ours": statistics.median(ours), "bare": statistics.median(base), "ratio": statistics.median(ratios),
            "min_ratio": min(ours) / min(base)}


def fill_time(args: argparse.Namespace, data: RandomPairs, teacher_cfg: ModelConfig) -> float:
    teacher = create_model(teacher_cfg).eval()
    start = time.perf_counter()
    fill_teacher_cache(teacher, data, captions=1, embed_dim=teacher_cfg.embed_dim, batch_size=args.batch,
                       info=DistInfo())
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny/ViT-B")
    p.add_argument("--teacher", default="tiny/ViT-S")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--skip", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: robust on a shared machine)")
    p.add_argument("--out", default="")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg, t_cfg = get_model_config(args.model), get_model_config(args.teacher)
    data = RandomPairs(args.batch * (args.steps + 8), cfg)  # under one epoch: no epoch-end checkpoint inside
    torch.manual_seed(2)
    teacher = (t_cfg, create_model(t_cfg).state_dict())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, t, cache in (("plain CLIP", None, False), ("distill fd, live teacher", teacher, False),
                               ("distill fd, teacher cache", teacher, True)):
            r = interleaved(args, data, t, cache, Path(tmp) / name.replace(" ", "_").replace(",", ""))
            rows.append((name, r))
            print(f"{name:28s} ours {r['ours'] * 1e3:8.1f} ms   bare open_clip {r['bare'] * 1e3:8.1f} ms   "
                  f"ratio {r['ratio']:.3f} (of minima {r['min_ratio']:.3f})", flush=True)
    fill = fill_time(args, data, t_cfg)
    report = render(args, rows, fill, len(data))
    print(report)
    if args.out:
        Path(args.out).write_text(report)


def render(args: argparse.Namespace, rows: list[tuple[str, dict[str, float]]], fill: float, n: int) -> str:
    plain = rows[0][1]["ratio"]  # every stage's bare step is the same plain student step
    lines = [
        "# Training step time: compt trainer vs a bare open_clip step",
        "",
        f"- machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"CPU only; torch {torch.__version__}, open_clip {open_clip.__version__}",
        f"- command: `.venv/bin/python benchmarks/bench_train.py --model {args.model} --teacher {args.teacher} "
        f"--batch {args.batch} --steps {args.steps} --threads {args.threads}`",
        f"- student {args.model}, teacher {args.teacher}, batch {args.batch}, 1 caption, fp32; medians of steps "
        f"{args.skip + 1}…{args.steps - 1}, each compt step interleaved with one bare step",
        "",
        "| stage | compt step (ms) | bare open_clip step (ms) | compt / bare (median of pairs) "
        "| compt / bare (minima) | vs compt plain (pair ratios) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        lines.append(f"| {name} | {r['ours'] * 1e3:.1f} | {r['bare'] * 1e3:.1f} | {r['ratio']:.3f} "
                     f"| {r['min_ratio']:.3f} | {r['ratio'] / plain:.3f} |")
    steps_per_epoch = n / args.batch
    lines += ["", f"Teacher-cache fill pass over {n} samples: {fill:.2f} s "
                  f"(≈ {fill / steps_per_epoch * 1e3:.1f} ms per step of one epoch, paid once per stage).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
