"""`train_stage`: train one chain member of any paradigm (from scratch, or grown + distilled) to a final checkpoint.

The stage's paradigm (`compt.paradigm.Paradigm`, named by its `StageSpec`) supplies the model, the task
(student + frozen teacher + loss), how a batch goes through it and the FSDP/compile blocks; this module is
the one loop every paradigm trains in: resume, step, log, checkpoint-then-evaluate, pending-evaluation
recovery, the NaN stop and SIGTERM/SIGINT.

Stage folder::

    last.pt        resume checkpoint (weights, optimizer, step, RNG, eval history, metrics offset)
    final.pt       final weights + model config + lineage (no train state)
    metrics.jsonl  train / eval records (see `compt.train.metrics`)
    tb/            TensorBoard events
    …              what the paradigm writes beside final.pt (`RunData.after_final`; language models: hf/)
    result.json    the `StageResult` + final.pt's size and sha256; when both exist and final.pt matches, the stage
                   is done and is not rerun

A stage killed at any point and started again with the same call resumes from last.pt and ends with the
same weights and metrics, bit for bit on CPU: data order, learning rate and every piece of state are
functions of the step (`compt.train.sampler`, `compt.train.optim`, `compt.train.state`).

One optimizer step consumes `train.batch_size` samples (global, over all ranks). With ``accum_steps = A`` it
is split into A micro-batches whose losses are averaged; contrastive negatives then come from one
micro-batch (batch_size / A samples) — plain gradient accumulation, not open_clip's feature-cache variant.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from compt import distributed
from compt.checkpoint import Checkpoint, atomic_write_json, file_digest, load_checkpoint, save_checkpoint, verify_digest
from compt.costs import training_flops
from compt.distributed import DistInfo
from compt.errors import UserError
from compt.paradigm import Paradigm, StateDict, lower_is_better, paradigm_named
from compt.parity import RECORD
from compt.stage import StageSpec, teacher_cache_folder
from compt.tasks import task_problems
from compt.train import stopping
from compt.train.conditions import Probe
from compt.train.loader import Batches, train_loader
from compt.train.optim import build_optimizer
from compt.train.sampler import StepBatchSampler
from compt.train.stage_loop import (
    LoopState,
    apply_grads,
    due_at,
    open_log,
    raise_stopped,
    resume_progress,
    save_last,
    schedule_step,
    stop_signals,
    sync_losses,
    track_finite,
)

Evaluate = Callable[[nn.Module], dict[str, float]]
POSITION_KEYS = ("step", "epoch", "samples", "flops")


@dataclass
class StageResult:
    checkpoint: Path            # final checkpoint (self-describing, compt format)
    metrics: dict[str, float]   # last eval metrics + final train losses (train_loss, train_clip_loss, …)
    steps: int
    samples: int                # samples seen
    train_flops: float          # samples × (3 × student fwd + teacher fwd if not cached) + cache fill
    wall_clock_s: float         # training wall clock (fill pass, steps, checkpoints; evaluation excluded)
    history: list[dict] = field(default_factory=list)  # [{"step", "epoch", "samples", "flops", **metrics}]
    conditions: dict = field(default_factory=dict)     # of the wall clock (`compt.train.conditions`); {} = unknown
    diagnostics: dict = field(default_factory=dict)    # grown stages: distance from the parent (`compt.diagnostics`)
    stopping: dict = field(default_factory=dict)       # stopping stages: target, probes, where it stopped

    def to_dict(self, folder: Path | None = None) -> dict[str, Any]:
        """JSON-ready; for result.json in `folder`, the checkpoint's path relative to it, so a copied or committed
        run names no path of the machine that made it."""
        return {**asdict(self), "checkpoint": os.path.relpath(self.checkpoint, folder) if folder else
                str(self.checkpoint)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], folder: Path) -> StageResult:
        """From result.json in `folder` (which also records ``final_pt``, the digest of final.pt, not a field
        here); a relative checkpoint path is relative to `folder` (older results hold absolute ones)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names and k != "checkpoint"},
                   checkpoint=Path(folder) / d["checkpoint"])


@dataclass
class _Stage(LoopState):
    """Everything the loop needs; built once by `_setup`. Settings come from `spec` only."""

    dataset: Dataset
    paradigm: Paradigm
    cached_teacher: bool        # teacher forward paid once by the cache fill, not per sample
    evaluate: Evaluate | None = None
    after_final: Callable[[Path, StateDict], None] | None = None   # beside final.pt (rank 0)
    validate: Evaluate | None = None   # the stopping probes' evaluation (validation split)
    probe_at: frozenset[int] = frozenset()   # steps after which a stopping probe runs (`compt.train.stopping`)

    @property
    def batch(self) -> int:
        return self.spec.batch_size

    def epoch(self, step: int) -> float:
        return step * self.batch / len(self.dataset)

    def flops(self, step: int) -> float:
        """Training FLOPs spent to reach `step`, with the steps of earlier probes' discarded branches."""
        s = self.spec
        return training_flops(s.student_flops, s.teacher_flops, (step + self.progress.probe_steps) * self.batch,
                              cached_teacher=self.cached_teacher, fill_samples=len(self.dataset))


def train_stage(spec: StageSpec, *, out_dir: Path, dataset: Dataset,
                init_state: dict[str, Tensor] | None = None, teacher_state: dict[str, Tensor] | None = None,
                evaluate: Evaluate | None = None, lineage: dict | None = None, progress: bool = True,
                on_step: Callable[[int], None] | None = None,
                after_final: Callable[[Path, StateDict], None] | None = None, unfinished: bool = False,
                validate: Evaluate | None = None) -> StageResult:
    """Train the stage `spec` on `dataset` into `out_dir`, resuming from last.pt.

    `init_state` initialises the student (None: the caller-seeded fresh init); a distilling spec needs the
    teacher's weights `teacher_state`. `evaluate` runs on the unwrapped student every
    `train.eval_every_epochs` epochs and at the end (on every rank; rank 0's result is kept).
    `on_step(step)` is called after every optimizer step (tests, benchmarks); `after_final(out_dir, weights)`
    on rank 0 after final.pt is written (the run data's `after_final`). `unfinished`: the caller has just found
    no finished result in `out_dir` (`load_result`), so it is not read (nor reported damaged) again.
    A spec with a stopping rule (``spec.until``) probes its progress with `validate` (a validation split,
    disjoint from `evaluate`'s) and stops at its target (`compt.train.stopping`).
    """
    started, probe = time.perf_counter(), Probe()
    out_dir = Path(out_dir)
    done = None if unfinished else load_result(out_dir)
    if done is not None:
        return done
    out_dir.mkdir(parents=True, exist_ok=True)
    if spec.until and validate is None:
        raise ValueError("a stage with a stopping rule needs a `validate` evaluation")
    stage = _setup(out_dir, spec, dataset, init_state, teacher_state, evaluate, lineage, progress)
    stage.started, stage.after_final = started, after_final  # the wall clock includes set-up and the teacher-cache fill
    if spec.until:
        stage.validate = validate
        stage.probe_at = frozenset(stopping.probe_steps(
            total=spec.total_steps, warmup=spec.warmup_steps, fraction=spec.decay_fraction,
            every_epochs=spec.probe_every, samples=len(dataset), batch=spec.batch_size))
    try:
        with stop_signals(stage.stop):
            _loop(stage, on_step)
        return _finish(stage, probe)
    finally:
        stage.log.close()


def load_result(out_dir: Path, *, weights: bool = True, verify: bool = True) -> StageResult | None:
    """The stored result of a finished stage, or None (a stage is done when result.json and final.pt exist;
    result.json is written after final.pt). ``weights=False`` reads results whose checkpoints were not kept
    (run summaries, e.g. benchmarks/runs): enough for reports, not for resuming or growing.

    With `weights` and `verify`, final.pt must also match the size and sha256 recorded in result.json when
    it was written; a damaged one (truncated copy, disk error) makes the stage not done, and `train_stage`
    then rebuilds final.pt from last.pt (which holds the last step) and rewrites result.json.
    """
    path, final = Path(out_dir) / "result.json", Path(out_dir) / "final.pt"
    if not path.is_file() or (weights and not final.is_file()):
        return None
    raw = json.loads(path.read_text())
    problem = verify_digest(final, raw.get("final_pt")) if weights and verify else ""
    if problem:
        print(f"compt: {problem}; the stage is not done — rebuilding it from {final.with_name('last.pt')}",
              file=sys.stderr)
        return None
    return StageResult.from_dict(raw, Path(out_dir))


# ----------------------------------------------------------------------------------------------- setup
def _setup(out_dir: Path, spec: StageSpec, dataset: Dataset, init_state: dict[str, Tensor] | None,
           teacher_state: dict[str, Tensor] | None, evaluate: Evaluate | None, lineage: dict | None,
           progress: bool) -> _Stage:
    info = distributed.init_distributed()
    train, paradigm = spec.train, paradigm_named(spec.paradigm)
    _validate(spec, info, len(dataset))
    resume = _load_resume(out_dir / "last.pt", spec)
    student = paradigm.create(spec.train_model, resume.state_dict if resume else init_state)
    task, cached = paradigm.build_task(student, spec, teacher_state, dataset, info, out_dir)
    if problems := task_problems(task):
        raise TypeError(f"the {paradigm.name} paradigm's task {type(task).__name__} does not fit compt.tasks.Task: "
                        f"it lacks {', '.join(problems)}")
    task.to(info.device)
    state = resume.train_state if resume else None
    if state is not None:
        task.load_extra_state(state["task"])
    task.student = distributed.wrap_student(task.student, info, fsdp=train.fsdp, precision=train.precision,
                                            compile=train.compile, blocks=paradigm.block_types(),
                                            methods=paradigm.fsdp_methods())
    optimizer = build_optimizer(task, train, lr=spec.lr)
    prog = resume_progress(task, optimizer, state, train)
    if state is not None and info.is_main:  # a person sees the resume too, not only the logs
        print(f"compt: resuming {lineage.get('stage', out_dir.name) if lineage else out_dir.name} "
              f"({spec.model.name}) at step {prog.step} of {spec.total_steps}", file=sys.stderr, flush=True)
    log = open_log(out_dir, spec, info, prog, state is not None, lineage, progress)
    return _Stage(out_dir=out_dir, spec=spec, info=info, dataset=dataset, paradigm=paradigm, task=task,
                  optimizer=optimizer, cached_teacher=cached, progress=prog, log=log, evaluate=evaluate,
                  lineage={**(lineage or {}), "train_stage": spec.summary()},
                  unmanaged=distributed.unmanaged_params(task.parameters(), task.student))


def _validate(spec: StageSpec, info: DistInfo, n: int) -> None:
    train = spec.train
    if train.batch_size % (train.accum_steps * info.world_size):
        raise UserError(f"batch_size {train.batch_size} must be divisible by accum_steps × processes "
                        f"({train.accum_steps} × {info.world_size})")
    if train.precision not in ("auto", "fp32", "bf16"):
        raise UserError(f"precision must be auto, fp32 or bf16, got {train.precision!r}")
    if n == 0:
        raise UserError("the training dataset is empty")
    if train.batch_size > n:
        raise UserError(f"train.batch_size {train.batch_size} is larger than the training set ({n} samples): "
                        f"one step would see samples twice; lower train.batch_size")
    if n != spec.samples:
        raise ValueError(f"the spec was resolved for {spec.samples} samples, the dataset has {n}")


def _load_resume(path: Path, spec: StageSpec) -> Checkpoint | None:
    """The stage's `last.pt`, memory-mapped on every rank (None when there is none).

    Why mapped, not read on rank 0 and broadcast: every rank needs the whole file anyway (the weights to build
    the student before wrapping, the full optimizer state that DDP keeps and FSDP2 slices), and a broadcast
    would leave a full unpickled copy in every rank's memory after passing it through rank 0's. Mapped, the
    ranks of a node share the file's pages in the page cache — ViT-L's ~5 GB once per node instead of once per
    rank — and each rank's own memory holds only what it copies out (the student's parameters; optimizer state
    moved to the GPU); writing to a mapped tensor copies that page (MAP_PRIVATE), never the file. No
    collective is involved, so resuming stays out of `compt.distributed`.
    """
    if not path.is_file():
        return None
    ckpt = load_checkpoint(path, mmap=True)
    state = ckpt.train_state or {}
    got = (ckpt.model_config.name if ckpt.model_config else None, state.get("total_steps"), state.get("batch_size"))
    expected = (spec.model.name, spec.total_steps, spec.batch_size)
    if got != expected:
        raise UserError(f"{path} belongs to another stage (model, steps, batch = {got}, expected "
                        f"{expected}); use a fresh folder or delete it")
    return ckpt


# ----------------------------------------------------------------------------------------------- loop
def _loop(st: _Stage, on_step: Callable[[int], None] | None) -> None:
    """Optimizer steps from the resume point to the end; logs, evaluates and checkpoints as it goes.

    The step never waits for the device: losses stay on it and are reduced over ranks and read only at
    *sync steps* (log, checkpoint, evaluation and last steps: `due_at`), where a non-finite loss seen since the
    last sync stops the run before anything is saved, and a stop signal (SIGTERM/SIGINT) is honoured.
    """
    st.task.train()
    if st.progress.eval_pending:  # killed between a checkpoint and its evaluation
        _evaluate(st)
    if _probe_owed(st) and _probe(st):  # killed between a probe step's checkpoint and the end of its probe
        return
    accum = st.train.accum_steps
    finite = torch.ones((), dtype=torch.bool, device=st.info.device)  # every loss since the last sync step
    with Batches(_loader(st)) as batches:
        for step in range(st.progress.step, st.total_steps):
            lr = schedule_step(st, step)
            sums = _optimizer_step(st, [next(batches) for _ in range(accum)])
            finite = track_finite(finite, sums)
            st.progress.step = step + 1
            due = due_at(step + 1, samples=len(st.dataset), batch=st.batch, total=st.total_steps, train=st.train,
                         evaluates=st.evaluate is not None)
            due["probe"] = step + 1 in st.probe_at
            due["ckpt"] = due["ckpt"] or due["probe"]  # a probe's branch starts from a saved state
            if not any(due.values()):
                st.log.step({})
            else:
                st.progress.losses, stopped = sync_losses(st, sums, finite)
                _after_step(st, lr, stopped, due)
                if stopped:
                    raise_stopped(st, step + 1)
            if on_step is not None:
                on_step(step + 1)
            if due["probe"] and _probe(st):
                return
    if st.evaluate is not None and not any(h["step"] == st.total_steps for h in st.progress.history):
        _evaluate(st)  # a last.pt from before `eval_pending` existed: its final evaluation is still owed
    if st.validate is not None and not any(p["step"] == st.total_steps for p in st.progress.probes):
        _record_probe(st, st.total_steps, st.total_steps)  # the cap's end: the full-length run is the last probe


def _probe_owed(st: _Stage) -> bool:
    return st.progress.step in st.probe_at and not any(p["step"] == st.progress.step for p in st.progress.probes)


def _probe(st: _Stage) -> bool:
    """A stopping probe at the current step (`compt.train.stopping`): branch, cool down, validate. True when
    the branch meets the target — it is then the stage's final model, evaluated on the held-out split; else
    the state before the branch is restored and the branch's steps are counted as spent."""
    s = st.progress.step
    end = stopping.branch_total(s, st.spec.warmup_steps, st.spec.decay_fraction)
    saved = stopping.Snapshot.take(st.task, st.optimizer)
    with distributed.fork_rng(st.info), Batches(_loader(st, start=s, stop=end)) as batches:
        for step in range(s, end):
            schedule_step(st, step, total=end)
            _optimizer_step(st, [next(batches) for _ in range(st.train.accum_steps)])
        met = _record_probe(st, s, end)
    if met:
        st.progress.step = end
        _evaluate(st)
        return True
    saved.restore(st.task, st.optimizer)
    st.progress.probe_steps += end - s
    return False


def _record_probe(st: _Stage, step: int, end: int) -> bool:
    """Validate the student as it is (the branch ending at `end`), log and keep the probe; whether it met. The
    probe records the stage's training wall clock so far (``wall_s``: earlier branches included, validation
    excluded), the wall-clock counterpart of its ``flops``."""
    start, wall = time.perf_counter(), st.wall()
    metrics = distributed.gather_objects(_measure(st, st.validate))[0]   # rank 0's numbers decide on every rank
    lower = [k for k in st.spec.target if lower_is_better(k)]
    met = st.spec.until != RECORD and stopping.meets(metrics, st.spec.target, lower)   # a record never stops
    probe = {"step": step, "end": end, "epoch": st.epoch(end), "flops": st.flops(end), "wall_s": wall, "met": met,
             **metrics}
    st.progress.probes.append(probe)
    st.log.write({"kind": "probe", **probe}, "probe")
    st.eval_s += time.perf_counter() - start
    return met


def _measure(st: _Stage, evaluate: Evaluate) -> dict[str, float]:
    """`evaluate` on the unwrapped student in eval mode without gradients, the task back in training mode after."""
    model = distributed.unwrap(st.task.student)
    model.eval()
    with torch.no_grad():
        metrics = {k: float(v) for k, v in evaluate(model).items()}
    st.task.train()
    return metrics


def _loader(st: _Stage, start: int | None = None, stop: int | None = None) -> DataLoader:
    """Batches of steps `start` (default: the next) to `stop` (default: the stage's end)."""
    start = st.progress.step if start is None else start
    sampler = StepBatchSampler(len(st.dataset), batch_size=st.batch, accum=st.train.accum_steps,
                               seed=st.spec.seed, start=start, stop=stop or st.total_steps,
                               shard_id=st.info.rank, num_shards=st.info.world_size)
    return train_loader(st.dataset, sampler, workers=st.train.loader_workers, info=st.info,
                        cache=getattr(st.task, "cache", None))


def _optimizer_step(st: _Stage, micro_batches: list[list[Tensor]]) -> dict[str, Tensor]:
    """Forward/backward over the micro-batches, then clip and step; returns the mean of each output."""
    st.optimizer.zero_grad(set_to_none=True)
    sums: dict[str, Tensor] = {}
    last = len(micro_batches) - 1
    for j, batch in enumerate(micro_batches):
        batch = distributed.move(batch, st.info)
        with distributed.no_sync(st.task.student, j < last):
            with distributed.autocast(st.info, st.train.precision):
                out = st.paradigm.forward(st.task, batch)
            (out["loss"] / len(micro_batches)).backward()
        for k, v in out.items():
            sums[k] = sums.get(k, 0.0) + v.detach().float() / len(micro_batches)
    apply_grads(st)
    st.task.post_step()
    return sums


def _after_step(st: _Stage, lr: float, stopped: bool, due: dict[str, bool]) -> None:
    """Log, checkpoint, then evaluate (a crash in evaluation loses no training: it reruns on resume)."""
    s = st.progress.step
    postfix = {}
    if due["log"]:
        ips = st.log.throughput(s, st.batch)
        record = {"kind": "train", **_position(st, s), "lr": lr, **st.progress.losses, "images_per_s": ips,
                  "time_s": st.wall()}
        st.log.write(record, "train")
        postfix = {"loss": st.progress.losses["loss"], "lr": lr, "img/s": ips}
    st.log.step(postfix)
    if due["ckpt"] or stopped:
        st.progress.eval_pending = due["eval"]
        _save_last(st)
    if due["eval"] and not stopped:
        _evaluate(st)


def _position(st: _Stage, step: int) -> dict[str, float]:
    return {"step": step, "epoch": st.epoch(step), "samples": step * st.batch, "flops": st.flops(step)}


def _evaluate(st: _Stage) -> None:
    start = time.perf_counter()
    metrics = _measure(st, st.evaluate)
    st.progress.eval_pending = False
    entry = {**_position(st, st.progress.step), **metrics}
    st.progress.history.append(entry)
    st.log.write({"kind": "eval", **entry}, "eval")
    st.eval_s += time.perf_counter() - start


def _save_last(st: _Stage) -> None:
    """Resume checkpoint in the compt format (`compt.train.stage_loop.save_last`)."""
    save_last(st, lambda path, weights, state: save_checkpoint(path, state_dict=weights, model_config=st.spec.model,
                                                               lineage=st.lineage, train_state=state))


def _finish(st: _Stage, probe: Probe) -> StageResult:
    """The stage's result; then each node's teacher-cache files go (nothing reads them once result.json says
    the stage is done; an unfinished stage keeps them for its resume)."""
    stops = stopping.summary(st.spec.target, st.spec.until, st.progress.probes, st.progress.probe_steps) \
        if st.spec.until else {}
    result = finish_stage(st, probe, train_flops=st.flops(st.progress.step), stopping=stops,
                          write_final=lambda path, weights: _write_final(st, path, weights))
    if st.info.local_rank == 0:  # one deleter per node; on a shared folder the nodes race harmlessly
        shutil.rmtree(teacher_cache_folder(st.train, st.out_dir), ignore_errors=True)
    return result


def _write_final(st: _Stage, path: Path, weights: StateDict) -> None:
    """final.pt, then what the run's paradigm writes beside it (rank 0)."""
    save_checkpoint(path, state_dict=weights, model_config=st.spec.model, lineage=st.lineage)
    if st.after_final is not None:
        st.after_final(st.out_dir, weights)


def finish_stage(st: LoopState, probe: Probe, *, train_flops: float,
                 write_final: Callable[[Path, dict[str, Tensor]], Any], stopping: dict | None = None) -> StageResult:
    """The stage's `StageResult` (last eval metrics + final train losses; a stopping stage's steps are those of
    the trajectory that made its final model, its samples and FLOPs include the discarded probe branches);
    rank 0 writes final.pt with `write_final(path, weights)`, then result.json with final.pt's digest (the stage
    is then done)."""
    weights = distributed.model_state_dict(st.task.student)
    evals = st.progress.history[-1] if st.progress.history else {}
    metrics = {k: v for k, v in evals.items() if k not in POSITION_KEYS}
    metrics |= {f"train_{k}" if k != "logit_scale" else k: v for k, v in st.progress.losses.items()}
    steps = st.progress.step
    result = StageResult(checkpoint=st.out_dir / "final.pt", metrics=metrics, steps=steps,
                         samples=(steps + st.progress.probe_steps) * st.spec.batch_size, train_flops=train_flops,
                         wall_clock_s=st.wall(), history=list(st.progress.history),
                         conditions=probe.finish(st.info.device), stopping=stopping or {})
    if st.info.is_main:
        write_final(result.checkpoint, weights)
        atomic_write_json(st.out_dir / "result.json",
                          {**result.to_dict(st.out_dir), "final_pt": file_digest(result.checkpoint)})
    distributed.barrier()
    return result

