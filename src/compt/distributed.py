"""Everything that knows about ranks, devices and process groups — the only such module in compt.

One process (no torchrun) needs no initialisation: every helper below is then the identity / a no-op.
Under ``torchrun`` the process group is created from RANK / WORLD_SIZE / LOCAL_RANK (NCCL on GPU, gloo on
CPU). Only the student is wrapped (DDP, or FSDP2's ``fully_shard`` when asked); the frozen teacher stays a
plain replicated module. FSDP2 hooks ``forward`` and the methods the paradigm names (`Paradigm.fsdp_methods`:
CLIP's ``encode_image`` and ``encode_text``, which evaluation calls) and, on GPU under bf16, gathers parameters
in bf16 and reduces gradients in fp32 (``MixedPrecisionPolicy``). On GPU, fp32 matmuls may use TF32. Parameters
a wrapper does not manage (a distillation projection, FSDP's ignored scalar ``logit_scale``) get their gradients
averaged by `all_reduce_grads`.

Contrastive losses need global negatives: `gather_with_grad` concatenates every rank's features with
``torch.distributed.nn.functional.all_gather``, whose backward sums the gradients of all ranks. Every rank
then computes the same global loss, each local feature receives W × its share of the gradient and DDP's
gradient averaging divides by W again, so the update equals the one-process update on the global batch
(open_clip's ``gather_with_grad=True, local_loss=False``).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from compt.errors import UserError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: its rank among `world_size` processes and the device it computes on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def pin_memory(self) -> bool:
        """Whether host batches should be pinned for asynchronous copies to the device."""
        return self.device.type == "cuda"


def world_info_from_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    env = os.environ
    return int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))


def local_world_size() -> int:
    """Processes on this node (torchrun's LOCAL_WORLD_SIZE; 1 without torchrun)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", 1))


def node_index() -> int:
    """This node's index among the nodes of the job (torchrun's GROUP_RANK; 0 without torchrun)."""
    return int(os.environ.get("GROUP_RANK", 0))


def is_main() -> bool:
    """Whether this process is rank 0, the one that writes run files (from torchrun's environment, like
    `init_distributed`'s `DistInfo.rank`; usable before it)."""
    return world_info_from_env()[0] == 0


def say(line: str) -> None:
    """``compt: <line>`` on stderr from rank 0 only (what a run says about itself as it starts)."""
    if is_main():
        print(f"compt: {line}", file=sys.stderr, flush=True)


PG_TIMEOUT_S = 3600  # collectives wait this long: rank 0 alone writes checkpoints while the others wait


def pg_timeout() -> datetime.timedelta:
    """How long a collective waits for the slowest rank: ``COMPT_PG_TIMEOUT_S`` seconds, else `PG_TIMEOUT_S`.

    torch's default (10 min for NCCL) is shorter than rank 0's checkpoint write of a large model to a network
    filesystem, during which every other rank waits in the barrier after it.
    """
    raw = os.environ.get("COMPT_PG_TIMEOUT_S", "")
    try:
        seconds = float(raw) if raw else PG_TIMEOUT_S
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise UserError(f"COMPT_PG_TIMEOUT_S must be a positive number of seconds, got {raw!r}")
    return datetime.timedelta(seconds=seconds)


def init_distributed() -> DistInfo:
    """Join torchrun's process group if there is one (idempotent, with `pg_timeout`) and pick this rank's
    device."""
    rank, world, local = world_info_from_env()
    device = torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls (eval, fp32 runs) on tensor cores
        torch.backends.cudnn.allow_tf32 = True
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=pg_timeout())
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=device)


def user_device(name: str, flag: str = "--device") -> torch.device:
    """The device a user named (``cpu``, ``cuda``, ``cuda:N``, ``mps``), checked to exist on this machine;
    a one-line `UserError` for a malformed name or a device that is not there."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"{flag} {name!r} is not a device name: use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"{flag} {name}: this machine has no usable CUDA GPU (torch.cuda.is_available() is "
                            f"False); use {flag} cpu")
        if device.index is not None and device.index >= count:
            raise UserError(f"{flag} {name}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{flag} {name}: Apple's MPS backend is not available here; use {flag} cpu")
    elif device.type not in ("cpu", "mps"):
        raise UserError(f"{flag} {name}: compt evaluates on cpu, cuda[:N] or mps, not {device.type}")
    return device


def shutdown() -> None:
    """Leave the process group (call once at the very end of a torchrun job)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def _world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def barrier() -> None:
    if _world() > 1:
        dist.barrier()


def check_shared_dir(path: Path) -> None:
    """Multi-node runs need `path` on a filesystem every node sees (rank 0 writes the run's files — grown
    init.pt, the parent's final.pt — and every rank reads them): check it once, at start-up, on every rank.

    Rank 0 writes a token with a fresh nonce; every rank reads it back; any rank that cannot makes all raise.
    Single-node runs (every rank on rank 0's node) skip the check.
    """
    if _world() == 1 or local_world_size() == _world():
        return
    nonce = [f"{os.getpid()}-{time.time_ns()}"]
    dist.broadcast_object_list(nonce, src=0)
    token = Path(path) / ".compt-shared-fs-check"
    if dist.get_rank() == 0:
        token.write_text(nonce[0])
    barrier()
    try:
        seen = token.read_text() == nonce[0]
    except OSError:
        seen = False
    missing = torch.tensor([0.0 if seen else 1.0], device=_collective_device())
    dist.all_reduce(missing, op=dist.ReduceOp.SUM)
    barrier()
    if dist.get_rank() == 0:
        token.unlink(missing_ok=True)
    if missing.item() > 0:
        raise UserError(f"{path} is not shared by all nodes ({int(missing.item())} of {_world()} ranks cannot read "
                        f"what rank 0 wrote there): multi-node runs need the run directory (and data.path) on a "
                        f"filesystem every node mounts")


def rank() -> int:
    """This process's rank in the process group (0 without one)."""
    return dist.get_rank() if dist.is_initialized() else 0


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


# ----------------------------------------------------------------------------------------------- random streams
def rank_seed(seed: int, rank: int) -> int:
    """The torch seed of `rank`'s random stream: `seed` itself on rank 0 (a one-process run draws exactly what
    it always drew), a 63-bit hash of (seed, rank) on the others (no two (seed, rank) pairs share a stream)."""
    if rank == 0:
        return seed
    digest = hashlib.sha256(f"compt-rank-stream:{seed}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def seed_rank(seed: int, info: DistInfo) -> int:
    """Seed torch (CPU and every CUDA device) with this rank's `rank_seed`; returns that seed.

    Each rank then draws its own random numbers (patch-dropout masks, dropout) instead of repeating rank 0's.
    Weights never come from this stream on more than one rank: DDP broadcasts rank 0's at wrapping and
    `wrap_student` does the same before FSDP shards them.
    """
    value = rank_seed(seed, info.rank)
    torch.manual_seed(value)
    return value


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj` (picklable), in rank order, on every rank; ``[obj]`` when alone. One collective:
    for checkpoint-time state (RNG states), not for the step."""
    if _world() == 1:
        return [obj]
    out: list[Any] = [None] * _world()
    dist.all_gather_object(out, obj)
    return out


# ----------------------------------------------------------------------------------------------- devices
def move(batch: Iterable[Tensor], info: DistInfo) -> list[Tensor]:
    """Move a batch (tuple of tensors) to this rank's device."""
    return [t.to(info.device, non_blocking=True) for t in batch]


def fork_rng(info: DistInfo) -> contextlib.AbstractContextManager:
    """This rank's CPU (and its CUDA device's) generators saved on entry and restored on exit: work done inside
    (a stopping probe's cooldown branch) leaves the stage's random stream where it was."""
    devices = [info.device] if info.device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices)


def uses_bf16(info: DistInfo, precision: str) -> bool:
    """Whether `precision` ("auto" | "fp32" | "bf16") means bf16 compute on this rank's device."""
    return precision == "bf16" or (precision == "auto" and info.device.type == "cuda")


def autocast(info: DistInfo, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for precision "bf16", or "auto" on GPU; plain fp32 otherwise."""
    if not uses_bf16(info, precision):
        return contextlib.nullcontext()
    return torch.autocast(device_type=info.device.type, dtype=torch.bfloat16)


@contextlib.contextmanager
def full_precision() -> Iterator[None]:
    """Autocast off, whichever device the step's `autocast` is on: losses computed inside run in fp32 (their
    logit matmuls and softmaxes would otherwise run in bf16) on fp32 features."""
    with contextlib.ExitStack() as stack:
        for device_type in ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",):
            stack.enter_context(torch.autocast(device_type=device_type, enabled=False))
        yield


# ----------------------------------------------------------------------------------------------- wrapping
COMPILE_BACKEND = "inductor"  # tests on CPU swap in "aot_eager": inductor's C++ build takes minutes there
# Compiled graphs one stage may keep per code object (ResidualAttentionBlock.forward serves both towers):
# 2 towers × (train, eval) × a few input shapes. torch's default of 8 runs out by the third chain member.
RECOMPILE_LIMIT = 64


def wrap_student(model: nn.Module, info: DistInfo, *, fsdp: bool = False, precision: str = "auto",
                 compile: bool = False, blocks: tuple[type, ...] = (), methods: tuple[str, ...] = ()) -> nn.Module:
    """DDP (or FSDP2 per transformer block + root) around the student; the model itself when alone (no
    process group: a one-rank group, as `benchmarks/gpu_check.py` makes, still wraps).

    `blocks` are the module types that become one FSDP unit each and are compiled one by one (the paradigm's
    `block_types`); `methods`, those called outside ``forward`` that FSDP2 must hook too (`fsdp_methods`).
    With `compile`, compiling starts afresh (`start_compiling`) and every transformer block is compiled in
    place first (``nn.Module.compile``: state-dict keys unchanged, blocks of one shape share their graph,
    FSDP2 units stay the blocks). FSDP2 on GPU with bf16 compute all-gathers bf16 parameters and
    reduce-scatters fp32 gradients; on CPU (gloo) parameters stay fp32, so one and several processes compute
    the same numbers.
    """
    if compile:
        start_compiling()
        for block in [m for m in model.modules() if isinstance(m, blocks)]:
            block.compile(backend=COMPILE_BACKEND)
    if info.world_size == 1 and not dist.is_initialized():
        return model
    if not fsdp:
        ids = [info.device.index] if info.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=False)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    _broadcast_from_rank0(model)
    mesh = init_device_mesh(info.device.type, (info.world_size,))
    mp = MixedPrecisionPolicy()
    if info.device.type == "cuda" and uses_bf16(info, precision):
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for block in [m for m in model.modules() if isinstance(m, blocks)]:
        fully_shard(block, mesh=mesh, mp_policy=mp)
    # FSDP2 cannot shard 0-d parameters: the scalar logit scale stays replicated (see all_reduce_grads).
    scalars = {p for p in model.parameters() if p.ndim == 0}
    fully_shard(model, mesh=mesh, ignored_params=scalars, mp_policy=mp)
    for name in methods:
        register_fsdp_forward_method(model, name)
    return model


def _broadcast_from_rank0(model: nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (what DDP does at wrapping; FSDP2 shards whatever each
    rank holds, so a model initialised from per-rank random streams would otherwise mix inits)."""
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            dist.broadcast(t.data, src=0)


def start_compiling() -> None:
    """Empty torch.compile's caches and raise its per-function graph limit to `RECOMPILE_LIMIT`, once per
    stage: the previous members' graphs (other widths, never run again) would otherwise fill the cache until
    dynamo stops compiling and silently runs the blocks eagerly."""
    torch._dynamo.reset()
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)


def unwrap(model: nn.Module) -> nn.Module:
    """The user module inside a DDP wrapper (FSDP2 shards in place: the module itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _is_fsdp(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def unmanaged_params(params: Iterable[nn.Parameter], student: nn.Module) -> list[nn.Parameter]:
    """Trainable parameters whose gradients the student's wrapper does not synchronise."""
    if _world() == 1:
        return []
    from torch.distributed.tensor import DTensor

    if isinstance(student, nn.parallel.DistributedDataParallel):
        managed = {id(p) for p in student.parameters()}
        return [p for p in params if p.requires_grad and id(p) not in managed]
    return [p for p in params if p.requires_grad and not isinstance(p, DTensor)]


def all_reduce_grads(params: list[nn.Parameter]) -> None:
    """Average the gradients of `params` over ranks (for parameters outside DDP/FSDP)."""
    if _world() == 1:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(_world())


@contextlib.contextmanager
def no_sync(model: nn.Module, active: bool) -> Iterator[None]:
    """Skip gradient synchronisation for the micro-batches of an accumulation step before the last."""
    if not active or _world() == 1:
        yield
    elif isinstance(model, nn.parallel.DistributedDataParallel):
        with model.no_sync():
            yield
    elif _is_fsdp(model):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield


def clip_grad_norm(params: list[nn.Parameter], max_norm: float) -> Tensor:
    """Clip the global gradient norm of `params`, which may mix FSDP-sharded and replicated tensors."""
    from torch.distributed.tensor import DTensor

    params = [p for p in params if p.grad is not None]
    sharded = [p for p in params if isinstance(p.grad, DTensor)]
    plain = [p for p in params if not isinstance(p.grad, DTensor)]
    total = torch.zeros((), device=params[0].grad.device)
    if sharded:
        total = total + torch.nn.utils.get_total_norm([p.grad for p in sharded]).full_tensor() ** 2
    if plain:
        total = total + torch.nn.utils.get_total_norm([p.grad for p in plain]) ** 2
    total = total.sqrt()
    for group in (sharded, plain):
        if group:
            torch.nn.utils.clip_grads_with_norm_(group, max_norm, total)
    return total


# ----------------------------------------------------------------------------------------------- collectives
def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate `x` (B_local, ...) from every rank along dim 0, keeping the autograd graph."""
    if _world() == 1:
        return x
    import torch.distributed.nn.functional as dist_fn

    return torch.cat(dist_fn.all_gather(x), dim=0)


def gather_no_grad(x: Tensor) -> Tensor:
    """Concatenate `x` (B_local, ...) from every rank along dim 0 (no gradient, e.g. teacher features)."""
    if _world() == 1:
        return x
    out = [torch.empty_like(x) for _ in range(_world())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


def all_reduce_mean(x: Tensor) -> Tensor:
    """Element-wise mean over ranks of a small tensor (metrics, stop flags)."""
    if _world() == 1:
        return x
    x = x.clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x / _world()


# ----------------------------------------------------------------------------------------------- state
def model_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Full (unsharded) CPU state dict of the student; with FSDP only rank 0 receives tensors."""
    if _is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}


def optimizer_state_dict(root: nn.Module, optimizer: torch.optim.Optimizer, fsdp: bool) -> dict[str, Any]:
    """Full optimizer state (FSDP: gathered to rank 0 and keyed by names under `root`)."""
    if not (fsdp and _world() > 1):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(root, optimizer, options=opts)


def load_optimizer_state_dict(root: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any],
                              fsdp: bool) -> None:
    """Inverse of `optimizer_state_dict` (every rank passes the full state read from the checkpoint)."""
    if not (fsdp and _world() > 1):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(root, optimizer, state, options=StateDictOptions(full_state_dict=True))


def all_true(flag: bool) -> bool:
    """Whether `flag` holds on every rank (one small collective; the flag itself when alone)."""
    if _world() == 1:
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    x = torch.tensor(float(flag), device=device)
    dist.all_reduce(x, op=dist.ReduceOp.MIN)
    return bool(x.item() > 0)
