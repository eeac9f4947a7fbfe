"""Is data loading the bottleneck? Loader throughput next to tiny-model training throughput (issue 5).

Measures images/s through a `DataLoader` (batch 128, shuffled) for
- the synthetic set (pre-rendered uint8, K = 1 and K = 7 caption slots),
- a CSV of PNG files, pre-decoded at build time (the default for ≤ data.predecode_max images) and decoded
  lazily per item (0 and 2 workers),
and a forward + backward + AdamW step of ``tiny/ViT-S`` and ``tiny/ViT-B`` on batch 128 (symmetric InfoNCE),
then reports loader / training ratios (target ≥ 3×).

    python benchmarks/bench_data.py                    # writes benchmarks/results/data.md
    python benchmarks/bench_data.py --quick            # smaller sets, no file written
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from compt.clip.data import build_train_dataset
from compt.clip.models import create_model, get_model_config
from compt.clip.settings import ClipDataConfig

BATCH = 128
ROOT = Path(__file__).resolve().parents[1]


def loader_rate(ds: torch.utils.data.Dataset, *, workers: int = 0, max_batches: int = 60) -> float:
    """Images/s through a shuffled DataLoader (first batch excluded: worker start-up)."""
    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=workers, drop_last=True,
                                         persistent_workers=False)
    it = iter(loader)
    next(it)
    n, start = 0, time.perf_counter()
    for i, (images, _, _) in enumerate(it):
        n += images.shape[0]
        if i + 1 >= max_batches:
            break
    return n / (time.perf_counter() - start)


def train_rate(name: str, steps: int = 6) -> float:
    """Images/s of forward + backward + AdamW on batch 128 (one caption slot), after one warm-up step."""
    cfg = get_model_config(name)
    model = create_model(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.randn(BATCH, 3, cfg.vision.image_size, cfg.vision.image_size)
    tokens = torch.randint(1, 49000, (BATCH, 1, cfg.text.context_length))
    tokens[:, :, -1] = 49407
    labels = torch.arange(BATCH)

    def step() -> None:
        img, txt, scale = model(images, tokens[:, 0])
        logits = scale * img @ txt.T
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * BATCH / (time.perf_counter() - start)


def write_png_csv(folder: Path, n: int, size: int = 64) -> Path:
    """n random-ish RGB PNGs of size×size and a filepath,caption CSV."""
    rng = np.random.default_rng(0)
    rows = ["filepath,caption"]
    for i in range(n):
        pixels = np.clip(rng.normal(128, 60, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.png")
        rows.append(f"{i:05d}.png,a picture number {i}")
    path = folder / "train.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def measure(quick: bool) -> tuple[list[tuple[str, float, str]], dict[str, float]]:
    cfg = get_model_config("tiny/ViT-S")
    n_syn, n_files = (4000, 1000) if quick else (10_000, 3000)
    loaders: list[tuple[str, float, str]] = []
    for k in (1, 7):
        start = time.perf_counter()
        ds = build_train_dataset(ClipDataConfig(num_samples=n_syn, captions_per_image=k), cfg)
        built = time.perf_counter() - start
        loaders.append((f"synthetic, {n_syn} images, K={k}", loader_rate(ds), f"built in {built:.1f} s"))
    with tempfile.TemporaryDirectory() as tmp:
        csv = write_png_csv(Path(tmp), n_files)
        base = ClipDataConfig(kind="csv", path=str(csv), eval_path=str(csv))
        start = time.perf_counter()
        ds = build_train_dataset(base, cfg)
        built = time.perf_counter() - start
        loaders.append((f"CSV of {n_files} 64×64 PNGs, pre-decoded", loader_rate(ds), f"decoded in {built:.1f} s"))
        lazy = build_train_dataset(ClipDataConfig(**{**base.__dict__, "predecode_max": 0}), cfg)
        for workers in (0, 2):
            rate = loader_rate(lazy, workers=workers, max_batches=15)
            loaders.append((f"CSV of {n_files} 64×64 PNGs, lazy decode, {workers} workers", rate, "decode per item"))
    training = {name: train_rate(name) for name in ("tiny/ViT-S", "tiny/ViT-B")}
    return loaders, training


def report(loaders: list[tuple[str, float, str]], training: dict[str, float], command: str) -> str:
    lines = ["# Data loading vs training throughput", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
             f"({torch.get_num_threads()} threads), Python {platform.python_version()}.",
             f"Command: `{command}`. Batch {BATCH}; images 32×32 (tiny family), context 32. Load average "
             f"(1 min) when done: {os.getloadavg()[0]:.1f} — the machine is shared; a load above 2 slows the "
             "training step (2 intra-op threads) far more than the single-threaded loaders.", "",
             "| model | train images/s (fwd+bwd+AdamW, K=1) |", "|---|---:|"]
    lines += [f"| {name} | {rate:,.0f} |" for name, rate in training.items()]
    slowest_model = max(training.values())
    lines += ["", "| loader | images/s | × tiny/ViT-S | × tiny/ViT-B | note |", "|---|---:|---:|---:|---|"]
    for name, rate, note in loaders:
        lines.append(f"| {name} | {rate:,.0f} | {rate / training['tiny/ViT-S']:.1f}× | "
                     f"{rate / training['tiny/ViT-B']:.1f}× | {note} |")
    ok = all(rate >= 3 * slowest_model for name, rate, _ in loaders if "lazy" not in name)
    lines += ["", f"Target ≥ 3× the faster model's training throughput for the default (in-memory) loaders: "
              f"{'met' if ok else 'NOT met'}. Lazy per-item decoding (sets larger than data.predecode_max) "
              "runs in DataLoader workers; its rate scales with `data.workers` and image size.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sets; print only")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "data.md"))
    args = parser.parse_args()
    loaders, training = measure(args.quick)
    text = report(loaders, training, "python benchmarks/bench_data.py" + (" --quick" if args.quick else ""))
    print(text)
    if not args.quick:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"written: {args.out}")


if __name__ == "__main__":
    main()
