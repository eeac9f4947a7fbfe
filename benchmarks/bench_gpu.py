"""The path a GPU user runs, timed: compt's steps against a bare open_clip step, and the real data loader.

    python benchmarks/bench_gpu.py                         # one GPU: paper/ViT-S-16, paper/ViT-B-16, B → BL (< 8 min)
    python benchmarks/bench_gpu.py --size cpu              # tiny/ models, what a CPU finishes in about 2 minutes
    python benchmarks/bench_gpu.py --size test --steps 4   # test/ models, seconds (tests/test_bench_gpu.py)

For each model, one process runs in turn (same device, same batch, bf16 autocast on GPU, fp32 on CPU):

- ``bare``: a hand-written open_clip step on one fixed batch already on the device (``model(images, texts)``
  → ``open_clip.loss.ClipLoss`` → backward → AdamW (fused on CUDA) → logit-scale clamp): no data loading;
- ``plain``: `train_stage` of the model from scratch on in-memory uint8 images (the real loader, workers,
  pinned copies, normalisation on the device, logging every 10 steps);
- ``distill-live`` / ``distill-cache``: the distillation stage (FD) from a frozen teacher run every step,
  or with the teacher's embeddings cached (bf16 rows delivered by the loader).

Each stage covers exactly one epoch (``steps × batch`` samples), so its only checkpoint is the last step's,
which is left out; the first `--skip` steps (allocator, cuDNN and worker warm-up) too. Step time is the wall
clock between the device syncs at steps `skip` and ``steps − 1`` divided by the steps between them.
``setup`` is the time from the call to the end of step 1 (model build, cache fill, worker start, first step).
MFU = analytic training FLOPs per image (3 × student forward, + teacher forward when it runs; 2 × MACs,
`compt.clip.flops`) × images/s ÷ the device's dense bf16 peak (`PEAK_BF16`, vendor data sheets; `--peak-tflops`
overrides). Peak memory is `torch.cuda.max_memory_allocated` (GPU only).

End to end: webdataset shards of random smooth JPEGs are written to a temporary folder, read back through
``data.kind = "wds"`` (indexed reader, lazy decode in the loader workers) and ``"wds-stream"`` (the
webdataset library's pipeline) and trained on; each loader alone is timed on the same shards with the
default workers (its images/s over the stage's is the loader margin).
"""

from __future__ import annotations

import argparse
import io
import math
import platform
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image

from compt import distributed
from compt.clip.data import build_train_dataset
from compt.clip.data.datasets import PairDataset
from compt.clip.data.images import TensorImages, normalize
from compt.clip.flops import model_flops
from compt.clip.models import create_model, get_model_config
from compt.clip.settings import ClipDataConfig
from compt.clip.tasks import MAX_LOGIT_SCALE
from compt.config import MemberConfig, TrainConfig
from compt.stage import resolve_spec
from compt.train import train_stage
from compt.train.loader import resolve_workers, train_loader
from compt.train.optim import build_optimizer
from compt.train.sampler import StepBatchSampler

# Dense bf16 tensor-core peak, FLOP/s, by a substring of torch.cuda.get_device_name (first match wins).
PEAK_BF16 = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("GH200", 989e12), ("A100", 312e12),
             ("L40S", 362e12), ("L4", 121e12), ("A10", 125e12))


@dataclass(frozen=True)
class Size:
    models: tuple[str, ...]
    teacher: str        # distillation stage: teacher → student
    student: str
    batch: int
    steps: int
    skip: int
    shards: int         # end to end: shards × per_shard JPEGs of shard_px pixels
    per_shard: int
    shard_px: int


SIZES = {
    "gpu": Size(("paper/ViT-S-16", "paper/ViT-B-16"), "paper/ViT-B-16", "paper/ViT-BL-16", batch=256, steps=30,
                skip=10, shards=8, per_shard=1024, shard_px=256),
    "cpu": Size(("tiny/ViT-S", "tiny/ViT-B"), "tiny/ViT-B", "tiny/ViT-BL", batch=64, steps=12, skip=4, shards=4,
                per_shard=192, shard_px=40),
    "test": Size(("test/A", "test/B"), "test/B", "test/C", batch=8, steps=4, skip=1, shards=2, per_shard=24,
                 shard_px=20),
}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_memory_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def random_pairs(model: str, n: int) -> PairDataset:
    """`n` random uint8 images and one random caption each (EOT last), at the model's sizes."""
    cfg = get_model_config(model)
    g = torch.Generator().manual_seed(0)
    size, ctx = cfg.vision.image_size, cfg.text.context_length
    pixels = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    tokens = torch.randint(1, 1000, (n, 1, ctx), generator=g, dtype=torch.int32)
    tokens[:, :, -1] = 49407
    return PairDataset(TensorImages(pixels), tokens=tokens, k=1, context_length=ctx, name="random")


# ----------------------------------------------------------------------------------------------- timing
class StepClock:
    """`on_step` hook: device-synced wall clock at steps `skip` and `stop`; the time to the first step."""

    def __init__(self, skip: int, stop: int) -> None:
        self.skip, self.stop, self.start = skip, stop, time.perf_counter()
        self.marks: dict[int, float] = {}

    def __call__(self, step: int) -> None:
        if step in (1, self.skip, self.stop):
            sync()
            self.marks[step] = time.perf_counter()

    def step_s(self) -> float:
        return (self.marks[self.stop] - self.marks[self.skip]) / (self.stop - self.skip)

    def setup_s(self) -> float:
        return self.marks[1] - self.start


def bare_step_s(model: str, size: Size, train: TrainConfig) -> float:
    """Seconds per bare open_clip step (see module doc), after `size.skip` warm-up steps."""
    info = distributed.init_distributed()
    torch.manual_seed(1)
    net = create_model(model).to(info.device).train()
    opt = build_optimizer(net, train)
    loss_fn = open_clip.loss.ClipLoss()
    data = random_pairs(model, size.batch)
    images = normalize(data.images.images.to(info.device))
    texts = data.tokens[:, 0].long().to(info.device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with distributed.autocast(info, train.precision):
            image, text, scale = net(images, texts)
            loss = loss_fn(image, text, scale)
        loss.backward()
        opt.step()
        with torch.no_grad():
            net.logit_scale.clamp_(0, MAX_LOGIT_SCALE)

    for _ in range(size.skip):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(size.steps - 1 - size.skip):
        step()
    sync()
    return (time.perf_counter() - start) / (size.steps - 1 - size.skip)


def stage_run(out: Path, model: str, size: Size, train: TrainConfig, dataset: torch.utils.data.Dataset,
              teacher: str | None = None, captions: int = 1) -> dict[str, float]:
    """One-epoch `train_stage` of `model` (distilled from a random `teacher` when given) on `dataset` with
    `captions` caption slots per image → timings."""
    cfg = get_model_config(model)
    member = MemberConfig(model=model, epochs=size.steps * size.batch / len(dataset), distill="fd")
    t = None
    if teacher is not None:
        torch.manual_seed(2)
        t = (get_model_config(teacher), create_model(teacher).state_dict())
    clock = StepClock(size.skip, size.steps - 1)
    torch.manual_seed(0)
    spec = resolve_spec(model=cfg, member=member, train=train, from_scratch=t is None, parent=t[0] if t else None,
                        samples=len(dataset), captions=captions)
    train_stage(spec, out_dir=out, dataset=dataset, teacher_state=t[1] if t else None, progress=False,
                on_step=clock)
    return {"step_s": clock.step_s(), "setup_s": clock.setup_s()}


# ----------------------------------------------------------------------------------------------- rows
@dataclass
class Row:
    case: str
    model: str
    step_s: float
    images_per_s: float
    flops_per_image: float
    peak_gib: float
    setup_s: float = float("nan")
    vs: str = ""                  # "0.98× bare" …


def train_flops(model: str, teacher: str | None = None) -> float:
    """Analytic training FLOPs per image (1 caption): 3 × student forward (+ teacher forward)."""
    per = 3 * model_flops(get_model_config(model)).per_sample(1)
    return per + (model_flops(get_model_config(teacher)).per_sample(1) if teacher else 0.0)


def measure(case: str, model: str, size: Size, run: Callable[[], dict[str, float]], flops: float) -> Row:
    reset_peak()
    r = run()
    return Row(case, model, r["step_s"], size.batch / r["step_s"], flops, peak_memory_gib(),
               r.get("setup_s", float("nan")))


def model_rows(model: str, size: Size, train: TrainConfig, tmp: Path) -> list[Row]:
    """(a) bare and (b) plain for one model."""
    data = random_pairs(model, size.steps * size.batch)
    bare = measure("bare open_clip", model, size, lambda: {"step_s": bare_step_s(model, size, train)},
                   train_flops(model))
    plain = measure("compt plain", model, size, lambda: stage_run(tmp / f"plain-{model}", model, size, train, data),
                    train_flops(model))
    plain.vs = f"{bare.step_s / plain.step_s:.3f}× bare"
    return [bare, plain]


def distill_rows(size: Size, train: TrainConfig, tmp: Path) -> list[Row]:
    """(b) plain and (c) distillation with a live teacher and with the cache, for the distillation student."""
    s, t = size.student, size.teacher
    data = random_pairs(s, size.steps * size.batch)
    plain = measure("compt plain", s, size, lambda: stage_run(tmp / "d-plain", s, size, train, data),
                    train_flops(s))
    rows = [plain]
    for cache in (False, True):
        tr = replace(train, teacher_cache=cache)
        name = f"distill {t.split('/')[-1]} → {s.split('/')[-1]}, " + ("cache" if cache else "live teacher")
        row = measure(name, s, size, lambda tr=tr, c=cache: stage_run(tmp / f"d-{c}", s, size, tr, data, teacher=t),
                      train_flops(s, None if cache else t))
        row.vs = f"{plain.step_s / row.step_s:.3f}× plain"
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------- end to end
def write_shards(folder: Path, size: Size) -> str:
    """`size.shards` tar shards of smooth random JPEGs (+ .txt captions); returns their brace pattern."""
    rng = np.random.default_rng(0)
    for s in range(size.shards):
        with tarfile.open(folder / f"{s:03d}.tar", "w") as tar:
            for i in range(size.per_shard):
                small = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
                jpeg = io.BytesIO()
                small.resize((size.shard_px, size.shard_px), Image.BICUBIC).save(jpeg, "JPEG", quality=90)
                key = f"{s:03d}{i:05d}"
                for ext, payload in (("jpg", jpeg.getvalue()), ("txt", f"a photo of thing {i % 97}".encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    return str(folder / f"{{000..{size.shards - 1:03d}}}.tar")


def loader_images_per_s(dataset: torch.utils.data.Dataset, size: Size, workers: int) -> float:
    """Images/s of the training loader alone (default workers), after its first batch."""
    info = distributed.init_distributed()
    sampler = StepBatchSampler(len(dataset), batch_size=size.batch, accum=1, seed=0, start=0, stop=size.steps)
    batches = iter(train_loader(dataset, sampler, workers=workers, info=info))
    next(batches)
    start, n = time.perf_counter(), 0
    for _ in range(len(sampler) - 1):  # a stream is endless: take as many batches as the sampler holds
        n += len(next(batches)[0])
    return n / (time.perf_counter() - start)


def end_to_end_rows(size: Size, train: TrainConfig, tmp: Path) -> list[Row]:
    """A plain stage of the largest plain model reading local shards through each reader, and each loader alone."""
    model = size.models[-1]
    pattern = write_shards(tmp, size)
    rows = []
    for kind, reader in (("wds", "indexed reader"), ("wds-stream", "webdataset stream")):
        data_cfg = ClipDataConfig(kind=kind, path=pattern, num_samples=size.shards * size.per_shard, eval_samples=0,
                              predecode_max=0)
        dataset = build_train_dataset(data_cfg, get_model_config(model))
        stage = measure(f"end to end: wds shards, {reader}", model, size,
                        lambda d=dataset, k=kind, c=data_cfg.captions_per_image: stage_run(
                            tmp / f"e2e-{k}", model, size, train, d, captions=c),
                        train_flops(model))
        ips = loader_images_per_s(dataset, size, train.loader_workers)
        loader = Row(f"{reader} alone ({resolve_workers(train.loader_workers)} workers)", model, size.batch / ips,
                     ips, 0.0, float("nan"))
        loader.vs = f"{ips / stage.images_per_s:.2f}× the step"
        rows += [stage, loader]
    return rows


# ----------------------------------------------------------------------------------------------- report
def device_peak(override_tflops: float) -> tuple[str, float]:
    """(device description, dense bf16 peak FLOP/s or NaN when unknown)."""
    if override_tflops > 0:
        name = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "CPU"
        return name, override_tflops * 1e12
    if not torch.cuda.is_available():
        return f"CPU ({platform.machine()}, {torch.get_num_threads()} torch threads)", float("nan")
    name = torch.cuda.get_device_name()
    return name, next((peak for key, peak in PEAK_BF16 if key in name), float("nan"))


def fmt(x: float, spec: str) -> str:
    return "—" if math.isnan(x) or x == 0 else format(x, spec)


def render(rows: list[Row], args: argparse.Namespace, size: Size, device: str, peak: float, total_s: float) -> str:
    cmd = "python benchmarks/bench_gpu.py " + " ".join(args.argv)
    lines = ["# GPU path benchmark: compt's steps vs a bare open_clip step, and the real loader", "",
             f"`{cmd.strip()}` — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {total_s:.0f} s in all", "",
             f"- device: {device}; torch {torch.__version__}, open_clip {open_clip.__version__}",
             f"- batch {size.batch}, {size.steps} steps per case (steps {size.skip}–{size.steps - 1} timed), "
             f"1 caption, precision {args.precision}, loader workers {resolve_workers(-1)} (auto), "
             f"compile {args.compile}",
             f"- MFU peak: {fmt(peak / 1e12, '.0f')} TFLOP/s dense bf16" + (" (none known for this device)"
                                                                          if math.isnan(peak) else ""), "",
             "| case | model | step (ms) | images/s | ratio | MFU | peak mem (GiB) | setup (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mfu = r.flops_per_image * r.images_per_s / peak if r.flops_per_image else float("nan")
        lines.append(f"| {r.case} | {r.model} | {r.step_s * 1e3:.1f} | {r.images_per_s:.1f} | {r.vs or '—'} | "
                     f"{fmt(100 * mfu, '.1f')}{'' if math.isnan(mfu) else ' %'} | {fmt(r.peak_gib, '.2f')} | "
                     f"{fmt(r.setup_s, '.1f')} |")
    if not torch.cuda.is_available():
        lines += ["", "**No GPU ran this.** These are CPU numbers of the same code path (no bf16 peak: no MFU; no "
                  "device memory); the GPU numbers — ViT-S-16, ViT-B-16 and B → BL at batch 256 in bf16, MFU "
                  "against the stated peak — are still open. On one GPU (sized for < 8 minutes):", "",
                  "    python benchmarks/bench_gpu.py --out benchmarks/results/gpu.md"]
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(SIZES), default="gpu" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=0, help="steps per case (default: the size's)")
    p.add_argument("--batch", type=int, default=0, help="batch size (default: the size's)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument("--compile", action="store_true", help="train.compile = true for the compt stages")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="override the device's dense bf16 peak")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", default="", help="also write the Markdown table here")
    args = p.parse_args(argv)
    args.argv = argv if argv is not None else __import__("sys").argv[1:]
    return args


def main(argv: list[str] | None = None) -> str:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = SIZES[args.size]
    size = replace(size, steps=args.steps or size.steps, batch=args.batch or size.batch)
    size = replace(size, skip=min(size.skip, max(1, size.steps - 3)))
    train = TrainConfig(batch_size=size.batch, warmup_steps=2, stage_warmup_steps=2, log_every_steps=10,
                        precision=args.precision, compile=args.compile)
    device, peak = device_peak(args.peak_tflops)
    start, rows = time.perf_counter(), []
    with tempfile.TemporaryDirectory() as tmp:
        for i, model in enumerate(size.models):
            rows += model_rows(model, size, train, Path(tmp) / f"m{i}")
            print(rows[-1], flush=True)
        rows += distill_rows(size, train, Path(tmp) / "distill")
        print(rows[-1], flush=True)
        (Path(tmp) / "shards").mkdir()
        rows += end_to_end_rows(size, train, Path(tmp) / "shards")
    report = render(rows, args, size, device, peak, time.perf_counter() - start)
    print(report)
    if args.out:
        Path(args.out).write_text(report)
    return report


if __name__ == "__main__":
    main()
