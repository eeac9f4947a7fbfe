"""`train_lm_stage`: train one language-model chain member (from scratch, or grown + distilled) to a final checkpoint.

The stage folder has the same layout as a CLIP stage (`compt.train.trainer`), so `compt report` reads it
unchanged: ``last.pt`` (resume), ``final.pt``, ``metrics.jsonl`` + ``tb/``, ``result.json`` (a `StageResult`)
and, in addition, ``hf/`` — the final weights as a Hugging Face folder (`AutoModelForCausalLM.from_pretrained`).

It reuses the CLIP trainer's parts: step-indexed batches (`StepBatchSampler`, so a resumed stage sees the same
data), AdamW groups and the cosine schedule (`compt.train.optim`), RNG/progress state, the metrics log and the
distributed helpers (DDP, or FSDP2 with one unit per `LlamaDecoderLayer`), the wall-clock conditions and the
metric sinks; the loop's state, resume, what a step must do, the sync-free losses (read on the host only at
log, evaluation and checkpoint steps), ``last.pt``/``final.pt``/``result.json`` writing and the
"SIGTERM/SIGINT → checkpoint after the step, then stop" handling are the CLIP trainer's own
(`compt.train.stage_loop`, `compt.train.trainer.finish_stage`). Every setting comes from the stage's
`StageSpec` (`compt.chain.stage_spec`: lr, warmup, steps, teacher, distillation loss and temperature,
forward FLOPs). A sample is one window of ``context + 1``
tokens; FLOPs are `compt.flops.training_flops` of the analytic `compt.lm.flops` forwards (3 × student
forward per sample, plus one teacher forward when distilling). Evaluation is the held-out next-token loss
(``val_loss``) and its perplexity.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from compt import distributed
from compt.checkpoint import LM_FORMAT, atomic_save, load_checkpoint
from compt.errors import UserError
from compt.flops import training_flops
from compt.lm.losses import lm_loss
from compt.lm.models import LMConfig, create_lm, export_pretrained
from compt.lm.task import LMTask, build_lm_task
from compt.stage import StageSpec
from compt.tasks import freeze
from compt.train import stage_loop
from compt.train.conditions import Probe
from compt.train.loader import resolve_workers
from compt.train.optim import build_optimizer
from compt.train.sampler import StepBatchSampler
from compt.train.stage_loop import LoopState
from compt.train.trainer import StageResult, finish_stage, load_result


# ----------------------------------------------------------------------------------------------- checkpoints
def save_lm_checkpoint(path: Path, *, state_dict: dict[str, Tensor], cfg: LMConfig, lineage: dict[str, Any],
                       train_state: dict[str, Any] | None = None) -> Path:
    """Self-describing LM checkpoint: weights, `LMConfig`, lineage [, train state], written atomically."""
    payload = {"format": LM_FORMAT, "state_dict": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()},
               "lm_config": cfg.to_dict(), "lineage": dict(lineage)}
    return atomic_save(payload if train_state is None else {**payload, "train_state": train_state}, path)


def load_lm_checkpoint(path: Path) -> dict[str, Any]:
    """Read an LM checkpoint (`compt.checkpoint.load_checkpoint`, ``weights_only``) as a dict with its
    ``state_dict``, ``lm_config``, ``lineage`` and ``train_state`` (None when absent); anything else is a
    `UserError`."""
    ckpt = load_checkpoint(path)
    if not ckpt.is_lm:
        raise UserError(f"{path} is not a compt language-model checkpoint")
    return {"state_dict": ckpt.state_dict, "lm_config": ckpt.lm_config, "lineage": ckpt.lineage,
            "train_state": ckpt.train_state}


# ----------------------------------------------------------------------------------------------- stage
@dataclass
class _LMStage(LoopState):
    """Everything the loop needs; settings come from `spec` only (`LoopState`, shared with the CLIP trainer)."""

    data: Dataset
    held_out: Dataset
    tokenizer_file: Path | None = None

    @property
    def cfg(self) -> LMConfig:
        return self.spec.model

    def position(self, step: int) -> dict[str, float]:
        b, s = self.train.batch_size, self.spec
        return {"step": step, "epoch": step * b / len(self.data), "samples": step * b,
                "flops": training_flops(s.student_flops, s.teacher_flops, step * b)}


def train_lm_stage(spec: StageSpec, *, out_dir: Path, data: Dataset, held_out: Dataset,
                   init_state: dict[str, Tensor] | None = None, teacher_state: dict[str, Tensor] | None = None,
                   lineage: dict | None = None, tokenizer_file: Path | None = None,
                   progress: bool = True) -> StageResult:
    """Train the LM stage `spec` (`compt.chain.stage_spec`) on `data` into `out_dir` (resuming from last.pt);
    a distilling spec needs the teacher's weights `teacher_state`."""
    started, probe = time.perf_counter(), Probe()
    out_dir = Path(out_dir)
    done = load_result(out_dir)
    if done is not None:
        return done
    out_dir.mkdir(parents=True, exist_ok=True)
    st = _setup(out_dir, spec, data, held_out, init_state, teacher_state, lineage or {}, progress)
    st.tokenizer_file, st.started = tokenizer_file, started
    try:
        with stage_loop.stop_signals(st.stop):
            _loop(st)
        return _finish(st, probe)
    finally:
        st.log.close()


def _setup(out_dir: Path, spec: StageSpec, data: Dataset, held_out: Dataset, init_state: dict[str, Tensor] | None,
           teacher_state: dict[str, Tensor] | None, lineage: dict[str, Any], progress: bool) -> _LMStage:
    info = distributed.init_distributed()
    if len(data) == 0 or len(held_out) == 0:
        raise UserError("the text corpus gives an empty training or held-out split")
    if len(data) != spec.samples:
        raise ValueError(f"the spec was resolved for {spec.samples} samples, the data has {len(data)}")
    train = spec.train
    resume = _load_resume(out_dir / "last.pt", spec.model, spec.total_steps, train.batch_size)
    student = create_lm(spec.model, state_dict=resume["state_dict"] if resume else init_state)
    task = _task(student, spec, teacher_state, info)
    state = resume["train_state"] if resume else None
    if state is not None:
        task.load_extra_state(state["task"])
    task.to(info.device)
    task.student = distributed.wrap_student(task.student, info, fsdp=train.fsdp, blocks=decoder_block_types())
    optimizer = build_optimizer(task, train, lr=spec.lr)
    prog = stage_loop.resume_progress(task, optimizer, state, train)
    log = stage_loop.open_log(out_dir, spec, info, prog, state is not None, lineage, progress)
    return _LMStage(out_dir=out_dir, spec=spec, info=info, data=data, held_out=held_out, task=task,
                    optimizer=optimizer, lineage={**lineage, "train_stage": spec.summary()}, progress=prog, log=log,
                    unmanaged=distributed.unmanaged_params(task.parameters(), task.student))


def _load_resume(path: Path, cfg: LMConfig, total: int, batch_size: int) -> dict[str, Any] | None:
    """The stage's last.pt, refused when it belongs to another model or schedule."""
    if not path.is_file():
        return None
    ckpt = load_lm_checkpoint(path)
    state = ckpt.get("train_state") or {}
    got = (ckpt["lm_config"].name, state.get("total_steps"), state.get("batch_size"))
    if got != (cfg.name, total, batch_size):
        raise UserError(f"{path} belongs to another stage (model, steps, batch = {got}, expected "
                        f"{(cfg.name, total, batch_size)}); use a fresh folder or delete it")
    return ckpt


def decoder_block_types() -> tuple[type, ...]:
    """The FSDP2 units of a Llama model: its decoder layers."""
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    return (LlamaDecoderLayer,)


def _task(student: nn.Module, spec: StageSpec, teacher_state: dict[str, Tensor] | None,
          info: distributed.DistInfo) -> LMTask:
    """The plain LM task, or the distillation task of a spec with a teacher (the spec decided)."""
    if spec.teacher is None:
        return build_lm_task(student)
    if teacher_state is None:
        raise ValueError(f"stage {spec.model.name} distills from {spec.teacher.name} but got no teacher weights")
    t_model = freeze(create_lm(spec.teacher, state_dict=teacher_state)).to(info.device)
    return build_lm_task(student, distill=spec.distill, weight=spec.distill_weight, teacher=t_model,
                         student_dim=spec.model.hidden, teacher_dim=spec.teacher.hidden,
                         temperature=spec.distill_temperature)


# ----------------------------------------------------------------------------------------------- loop
def _loop(st: _LMStage) -> None:
    """Optimizer steps from the resume point to the end; sync-free as the CLIP loop (`compt.train.trainer`):
    losses stay on the device and are read only at sync steps (`stage_loop.due_at`, `stage_loop.sync_losses`)."""
    st.task.train()
    sampler = StepBatchSampler(len(st.data), batch_size=st.train.batch_size, accum=st.train.accum_steps,
                               seed=st.spec.seed, start=st.progress.step, stop=st.total_steps,
                               shard_id=st.info.rank, num_shards=st.info.world_size)
    batches = iter(DataLoader(st.data, batch_sampler=sampler, num_workers=resolve_workers(st.train.loader_workers)))
    finite = torch.ones((), dtype=torch.bool, device=st.info.device)  # every loss since the last sync step
    for step in range(st.progress.step, st.total_steps):
        lr = stage_loop.schedule_step(st, step)
        sums = _optimizer_step(st, [next(batches) for _ in range(st.train.accum_steps)])
        finite = stage_loop.track_finite(finite, sums)
        st.progress.step = step + 1
        due = stage_loop.due_at(step + 1, samples=len(st.data), batch=st.train.batch_size, total=st.total_steps,
                                train=st.train, evaluates=True)
        if not any(due.values()):
            st.log.step({})
            continue
        st.progress.losses, stopped = stage_loop.sync_losses(st, sums, finite)
        _after_step(st, lr, stopped, due)
        if stopped:  # SIGTERM/SIGINT on some rank (`stop_signals`): checkpointed this step, now stop
            stage_loop.raise_stopped(st, step + 1)


def _optimizer_step(st: _LMStage, micro: list[list[Tensor]]) -> dict[str, Tensor]:
    """Forward/backward over the micro-batches, then clip and step; returns this rank's mean of each output."""
    st.optimizer.zero_grad(set_to_none=True)
    sums: dict[str, Tensor] = {}
    for j, (tokens, _index) in enumerate(micro):
        with distributed.no_sync(st.task.student, j < len(micro) - 1), \
                distributed.autocast(st.info, st.train.precision):
            out = st.task(tokens.to(st.info.device))
            (out["loss"] / len(micro)).backward()
        for k, v in out.items():
            sums[k] = sums.get(k, 0.0) + v.detach().float() / len(micro)
    stage_loop.apply_grads(st)
    return sums


def _after_step(st: _LMStage, lr: float, stopped: bool, due: dict[str, bool]) -> None:
    """At a sync step: log, evaluate, then checkpoint (last.pt then holds the evaluation)."""
    if due["log"]:
        st.log.write({"kind": "train", **st.position(st.progress.step), "lr": lr, **st.progress.losses,
                      "time_s": st.wall()}, "train")
    st.log.step({"loss": st.progress.losses["loss"]})
    if due["eval"]:
        _evaluate(st)
    if due["ckpt"] or stopped:
        _save_last(st)


@torch.no_grad()
def held_out_loss(model: nn.Module, data: Dataset, batch_size: int, device: torch.device) -> float:
    """Mean next-token cross-entropy over every held-out window."""
    total, count = 0.0, 0
    for tokens, _ in DataLoader(data, batch_size=batch_size):
        tokens = tokens.to(device)
        logits = model(input_ids=tokens[:, :-1], use_cache=False).logits
        total += lm_loss(logits, tokens[:, 1:]).item() * tokens.shape[0]
        count += tokens.shape[0]
    return total / count


def perplexity(loss: float) -> float:
    """exp(loss) of a mean next-token loss in nats, capped at e^50 so a diverged model still gives a number."""
    return math.exp(min(loss, 50.0))


def _evaluate(st: _LMStage) -> None:
    start = time.perf_counter()
    model = distributed.unwrap(st.task.student)
    model.eval()
    loss = held_out_loss(model, st.held_out, st.train.batch_size, st.info.device)
    st.task.train()
    entry = {**st.position(st.progress.step), "val_loss": loss, "val_ppl": perplexity(loss)}
    st.progress.history.append(entry)
    st.log.write({"kind": "eval", **entry}, "eval")
    st.eval_s += time.perf_counter() - start


def _save_last(st: _LMStage) -> None:
    """Resume checkpoint in the LM format (`compt.train.stage_loop.save_last`)."""
    stage_loop.save_last(st, lambda path, weights, state: save_lm_checkpoint(path, state_dict=weights, cfg=st.cfg,
                                                                  lineage=st.lineage, train_state=state))


def _finish(st: _LMStage, probe: Probe) -> StageResult:
    return finish_stage(st, probe, train_flops=st.position(st.total_steps)["flops"],
                        write_final=lambda path, weights: _write_final(st, path, weights))


def _write_final(st: _LMStage, path: Path, weights: dict[str, Tensor]) -> None:
    """final.pt, and the same weights as a Hugging Face folder ``hf/``."""
    save_lm_checkpoint(path, state_dict=weights, cfg=st.cfg, lineage=st.lineage)
    export_pretrained(st.cfg, weights, st.out_dir / "hf", tokenizer_file=st.tokenizer_file)
