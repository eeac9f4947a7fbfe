"""The GPU path's checks in one command, for the first hour on a rented GPU (sized for < 8 minutes on one GPU;
not yet timed on one — each part's seconds are in the report, ``--no-bench`` leaves out the longest):

    python benchmarks/gpu_check.py                  # one GPU: every check, then bench_gpu.py at --steps 16
    python benchmarks/gpu_check.py --size test      # CPU, seconds: the CUDA-only parts are skipped and say so

1. ``sync``: training steps (plain; distillation from a live teacher; from the teacher cache) under
   ``torch.cuda.set_sync_debug_mode("warn")`` between the first `skip` steps and the last one — steps that are
   not sync steps (`compt.train.stage_loop.due_at`) — counting the synchronising operations it warns about
   (zero expected). On CPU the steps run and nothing is counted.
2. ``chain``: a 4-member tiny chain (`compt.runner.train_run`) with ``train.compile = true`` and evaluation after
   every stage, with dynamo's recompiles logged (``TORCH_LOGS=recompiles``) and counted; dynamo's recompile
   limit must not be hit (a hit means a member's blocks silently ran eagerly). Inductor on GPU; the "eager"
   backend on CPU (inductor's C++ build takes minutes there): dynamo traces and guards the same.
3. ``fsdp``: one rank's NCCL process group, the student wrapped by `compt.distributed.wrap_student` with FSDP2
   (``fully_shard``), bf16 and inductor-compiled blocks, a few steps of the fused AdamW `build_optimizer` gives
   on CUDA: finite losses, weights that move. On CPU those CUDA parts are skipped: the same steps run on gloo
   with eager-compiled blocks and the unfused AdamW.
4. ``bench``: `benchmarks/bench_gpu.py` (its report is appended).

Results go to ``benchmarks/results/gpu_check.md`` (``--out``); a run without a GPU says it was not run on one.
A part that fails is reported as FAILED with its error and the others still run; the exit status is 1 then.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import logging
import re
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_gpu  # noqa: E402

from compt import distributed  # noqa: E402
from compt.chain import train_run  # noqa: E402
from compt.clip.data.images import to_model_input  # noqa: E402
from compt.clip.models import create_model, get_model_config  # noqa: E402
from compt.clip.paradigm import PARADIGM as CLIP  # noqa: E402
from compt.clip.tasks import build_task  # noqa: E402
from compt.config import MemberConfig, TrainConfig, config_from_dict  # noqa: E402
from compt.stage import resolve_spec  # noqa: E402
from compt.train import train_stage  # noqa: E402
from compt.train.optim import build_optimizer  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "gpu_check.md"


@dataclass(frozen=True)
class Size:
    plain: str                  # sync: the plain stage's model
    teacher: str                # sync: distillation teacher → student
    student: str
    batch: int
    steps: int                  # per sync case: steps 1..skip warm up, skip+1..steps−1 are watched
    skip: int
    chain: tuple[str, ...]      # the compiled chain's members
    chain_samples: int
    chain_batch: int
    fsdp_model: str
    fsdp_steps: int
    bench: tuple[str, ...]      # bench_gpu.py's arguments


SIZES = {
    "gpu": Size("paper/ViT-S-16", "paper/ViT-S-16", "paper/ViT-B-16", batch=128, steps=12, skip=4,
                chain=("tiny/ViT-N", "tiny/ViT-C", "tiny/ViT-S", "tiny/ViT-M"), chain_samples=1024,
                chain_batch=128, fsdp_model="paper/ViT-B-16", fsdp_steps=6, bench=("--size", "gpu", "--steps", "16")),
    "test": Size("test/A", "test/A", "test/B", batch=8, steps=5, skip=2,
                 chain=("tiny/ViT-N", "tiny/ViT-T", "tiny/ViT-C", "tiny/ViT-S"), chain_samples=32, chain_batch=16,
                 fsdp_model="test/A", fsdp_steps=3, bench=("--size", "test", "--steps", "4")),
}


@dataclass
class Part:
    name: str
    status: str = "ok"          # ok | skipped | FAILED (partly skipped parts say so in `lines`)
    lines: list[str] = field(default_factory=list)  # Markdown lines of its findings
    seconds: float = 0.0


def cuda() -> bool:
    return torch.cuda.is_available()


# ----------------------------------------------------------------------------------------------- 1. sync
class SyncWatch:
    """`on_step` hook: sync debug mode "warn" from after step `skip` to after step `stop` (CUDA only)."""

    def __init__(self, skip: int, stop: int, caught: list[warnings.WarningMessage]) -> None:
        self.skip, self.stop, self.caught, self.window = skip, stop, caught, (0, 0)

    def __call__(self, step: int) -> None:
        if step == self.skip:
            bench_gpu.sync()
            self.window = (len(self.caught), len(self.caught))
            if cuda():
                torch.cuda.set_sync_debug_mode("warn")
        elif step == self.stop:
            if cuda():
                torch.cuda.set_sync_debug_mode(0)
            self.window = (self.window[0], len(self.caught))

    def syncs(self) -> list[str]:
        return [f"{w.filename}:{w.lineno}: {str(w.message).splitlines()[0][:120]}"
                for w in self.caught[slice(*self.window)] if "synchroniz" in str(w.message).lower()]


def sync_case(out: Path, size: Size, train: TrainConfig, model: str, teacher: str | None) -> list[str]:
    """Warned synchronisations (location: message) in the watched steps of one one-epoch stage."""
    data = bench_gpu.random_pairs(model, size.steps * size.batch)
    member = MemberConfig(model=model, epochs=1.0, distill="fd")
    t = None
    if teacher is not None:
        torch.manual_seed(2)
        t = (get_model_config(teacher), create_model(teacher).state_dict())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        watch = SyncWatch(size.skip, size.steps - 1, caught)
        try:
            torch.manual_seed(0)
            spec = resolve_spec(model=get_model_config(model), member=member, train=train, from_scratch=t is None,
                                parent=t[0] if t else None, samples=len(data), captions=1)
            train_stage(spec, out_dir=out, dataset=data, teacher_state=t[1] if t else None, progress=False,
                        on_step=watch)
        finally:
            if cuda():
                torch.cuda.set_sync_debug_mode(0)
    return watch.syncs()


def check_sync(size: Size, train: TrainConfig, tmp: Path) -> Part:
    part, total = Part("sync"), 0
    watched = f"steps {size.skip + 1}–{size.steps - 1} of {size.steps}"
    cases = ((f"plain {size.plain}", size.plain, None, train),
             (f"distill {size.teacher} → {size.student}, live teacher", size.student, size.teacher,
              replace(train, teacher_cache=False)),
             (f"distill {size.teacher} → {size.student}, cache", size.student, size.teacher, train))
    for i, (name, model, teacher, tr) in enumerate(cases):
        syncs = sync_case(tmp / f"sync{i}", size, tr, model, teacher)
        total += len(syncs)
        where = "; ".join(f"{n}× {s}" for s, n in Counter(syncs).most_common(3))
        part.lines.append(f"- {name}: " + (f"{len(syncs)} synchronising operations in {watched}"
                                           + (f" — {where}" if where else "") if cuda() else f"{watched} ran"))
    if not cuda():
        part.status = "skipped"
        part.lines.append("- **skipped (no CUDA):** sync debug mode needs a GPU; the steps ran, nothing was counted")
    elif total:
        part.status = "FAILED"
    return part


# ----------------------------------------------------------------------------------------------- 2. chain
class Records(logging.Handler):
    """Keeps the messages of torch's loggers (recompile reasons, the recompile-limit warning)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append((record.name, record.getMessage()))


@contextlib.contextmanager
def dynamo_log() -> Iterator[Records]:
    """torch._dynamo's recompile reasons and warnings while inside."""
    handler, logger = Records(), logging.getLogger("torch._dynamo")
    torch._logging.set_logs(recompiles=True)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        torch._logging.set_logs()


def chain_config(size: Size, workers: int) -> dict:
    members = [{"model": size.chain[0], "epochs": 1}]
    members += [{"model": m, "epochs": 1, "growth": "preserve", "distill": "fd"} for m in size.chain[1:]]
    return {"name": "gpu-check-chain", "chain": members,
            "data": {"kind": "synthetic", "num_samples": size.chain_samples, "eval_samples": size.chain_batch,
                     "probe_samples": 0, "captions_per_image": 2},
            "train": {"batch_size": size.chain_batch, "lr": 2e-3, "warmup_steps": 2, "stage_warmup_steps": 2,
                      "log_every_steps": 1000, "compile": True, "loader_workers": workers, "report_to": []}}


def check_chain(size: Size, tmp: Path) -> Part:
    part = Part("chain")
    backend = distributed.COMPILE_BACKEND if cuda() else "eager"
    cfg = config_from_dict(chain_config(size, -1 if cuda() else 0))
    old_backend, distributed.COMPILE_BACKEND = distributed.COMPILE_BACKEND, backend
    try:
        with dynamo_log() as log:
            results = train_run(cfg, tmp / "chain", baselines=False, progress=False)
    finally:
        distributed.COMPILE_BACKEND = old_backend
    recompiles = [m for name, m in log.messages if name.endswith("__recompiles")]
    limit = [m for _, m in log.messages if "recompile_limit" in m or "recompile limit" in m.lower()]
    evaluated = [k for k, r in results.items() if r.get("history")]
    functions = Counter(re.sub(r"^Recompiling function | in \S*site-packages/", " ", m.splitlines()[0]).strip()
                        for m in recompiles)
    part.lines += [f"- {len(cfg.chain)} members {' → '.join(size.chain)}, backend {backend}, "
                   f"{len(results)} stages trained, {len(evaluated)} evaluated",
                   f"- recompiles logged: {len(recompiles)} — " + "; ".join(f"{n}× {f}" for f, n in functions.items()),
                   f"- recompile limit hit: {len(limit)} times" + (f" — {limit[0].splitlines()[0]}" if limit else "")]
    if limit or len(evaluated) != len(cfg.chain):
        part.status = "FAILED"
    if not cuda():
        part.lines.append("- **inductor skipped (no CUDA):** compiled with the eager backend")
    return part


# ----------------------------------------------------------------------------------------------- 3. fsdp
@contextlib.contextmanager
def one_rank_group(tmp: Path) -> Iterator[None]:
    """A one-process group (NCCL on GPU, gloo on CPU; FileStore rendezvous: no ports)."""
    store = torch.distributed.FileStore(str(tmp / "store"), 1)
    torch.distributed.init_process_group("nccl" if cuda() else "gloo", store=store, rank=0, world_size=1,
                                         timeout=datetime.timedelta(minutes=5))
    try:
        yield
    finally:
        torch.distributed.destroy_process_group()


def fsdp_steps(size: Size, train: TrainConfig, tmp: Path) -> dict:
    """`size.fsdp_steps` optimizer steps of a ClipTask whose student is FSDP2-wrapped (one rank) and compiled."""
    from torch.distributed.fsdp import FSDPModule

    info = distributed.init_distributed()
    data = bench_gpu.random_pairs(size.fsdp_model, train.batch_size)
    images, tokens = data.images.images.to(info.device), data.tokens.long().to(info.device)
    with one_rank_group(tmp):
        torch.manual_seed(0)
        task = build_task(create_model(size.fsdp_model).to(info.device))
        before = {k: v.detach().to("cpu", torch.float32, copy=True) for k, v in task.student.state_dict().items()}
        task.student = distributed.wrap_student(task.student, info, fsdp=True, precision=train.precision,
                                                compile=True, blocks=CLIP.block_types(), methods=CLIP.fsdp_methods())
        optimizer = build_optimizer(task, train)
        losses, times = [], []
        for _ in range(size.fsdp_steps):
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            with distributed.autocast(info, train.precision):
                out = task(to_model_input(images), tokens, torch.arange(len(tokens)))
            out["loss"].backward()
            distributed.clip_grad_norm([p for g in optimizer.param_groups for p in g["params"]], train.grad_clip)
            optimizer.step()
            task.post_step()
            losses.append(float(out["loss"].detach()))
            bench_gpu.sync()
            times.append(time.perf_counter() - start)
        after = distributed.model_state_dict(task.student)
    return {"fsdp": isinstance(task.student, FSDPModule), "fused": all(g.get("fused") for g in optimizer.param_groups),
            "losses": losses, "times": times, "still": [k for k in before if torch.equal(before[k], after[k].float())],
            "tensors": len(before)}


def check_fsdp(size: Size, tmp: Path) -> Part:
    part = Part("fsdp")
    train = TrainConfig(batch_size=size.batch, precision="bf16" if cuda() else "fp32", grad_clip=1.0)
    backend = distributed.COMPILE_BACKEND if cuda() else "eager"
    old_backend, distributed.COMPILE_BACKEND = distributed.COMPILE_BACKEND, backend
    try:
        r = fsdp_steps(size, train, tmp)
    finally:
        distributed.COMPILE_BACKEND = old_backend
    times = r["times"]
    part.lines += [f"- {size.fsdp_model}, batch {train.batch_size}, {train.precision}, FSDP2 module: {r['fsdp']}, "
                   f"fused AdamW: {r['fused']}, blocks compiled with {backend}",
                   f"- losses {', '.join(f'{x:.4f}' for x in r['losses'])}; first step (compile) {times[0]:.1f} s, "
                   f"then {1e3 * sum(times[1:]) / max(len(times) - 1, 1):.1f} ms/step; "
                   f"{r['tensors'] - len(r['still'])}/{r['tensors']} tensors moved"
                   + (f" (unchanged: {', '.join(r['still'])})" if r["still"] else "")]
    finite = all(x == x and abs(x) != float("inf") for x in r["losses"])
    if not (finite and r["fsdp"] and len(r["still"]) < r["tensors"] and (r["fused"] or not cuda())):
        part.status = "FAILED"
    elif not cuda():
        part.status = "skipped"
        part.lines.append("- **CUDA parts skipped (no CUDA):** ran on gloo with eager-compiled blocks and the "
                          "unfused AdamW instead of NCCL, inductor and the fused kernel")
    return part


# ----------------------------------------------------------------------------------------------- 4. bench
def check_bench(size: Size, skip: bool) -> Part:
    part = Part("bench")
    if skip:
        part.status, part.lines = "skipped", ["- skipped (--no-bench)"]
        return part
    report = bench_gpu.main(list(size.bench)).splitlines()
    part.lines = ["", *("##" + line if line.startswith("#") else line for line in report)]
    return part


# ----------------------------------------------------------------------------------------------- report
def timed(run: Callable[[], Part], name: str) -> Part:
    start = time.perf_counter()
    try:
        part = run()
    except Exception as e:
        part = Part(name, "FAILED", [f"- {type(e).__name__}: {e}", "", "```",
                                     *traceback.format_exc().splitlines()[-12:], "```"])
    part.seconds = time.perf_counter() - start
    print(f"gpu_check: {part.name} {part.status} ({part.seconds:.0f} s)", flush=True)
    return part


def render(parts: list[Part], argv: list[str], total_s: float) -> str:
    device = torch.cuda.get_device_name() if cuda() else "CPU"
    lines = ["# GPU path checks", "",
             f"`python benchmarks/gpu_check.py {' '.join(argv)}`".replace(" `", "`") +
             f" — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {total_s:.0f} s in all; device: {device}; "
             f"torch {torch.__version__}", ""]
    if not cuda():
        lines += ["**This was not run on a GPU**: the CUDA-only parts are skipped (each says so) and the rest ran "
                  "on CPU. On one GPU (sized for < 8 minutes):", "",
                  "    python benchmarks/gpu_check.py", ""]
    lines += ["| check | status | seconds |", "|---|---|---|"]
    lines += [f"| {p.name} | {p.status} | {p.seconds:.0f} |" for p in parts]
    for p in parts:
        lines += ["", f"## {p.name}: {p.status}", "", *p.lines]
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(SIZES), default="gpu" if cuda() else "test")
    p.add_argument("--no-bench", action="store_true", help="leave out bench_gpu.py")
    p.add_argument("--out", default=str(OUT), help="the Markdown report (default: benchmarks/results/gpu_check.md)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> tuple[str, bool]:
    """(the report, whether every part passed or was skipped)."""
    argv = sys.argv[1:] if argv is None else argv
    args, start = parse(argv), time.perf_counter()
    size = SIZES[args.size]
    train = TrainConfig(batch_size=size.batch, warmup_steps=2, stage_warmup_steps=2, log_every_steps=10**6,
                        report_to=(), loader_workers=-1 if cuda() else 0)
    with tempfile.TemporaryDirectory() as tmp:
        parts = [timed(lambda: check_sync(size, train, Path(tmp)), "sync"),
                 timed(lambda: check_chain(size, Path(tmp)), "chain"),
                 timed(lambda: check_fsdp(size, Path(tmp)), "fsdp"),
                 timed(lambda: check_bench(size, args.no_bench), "bench")]
    report = render(parts, argv, time.perf_counter() - start)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report)
    print(report)
    return report, all(p.status != "FAILED" for p in parts)


if __name__ == "__main__":
    sys.exit(0 if main()[1] else 1)
