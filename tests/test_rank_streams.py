"""Every rank draws its own random numbers, and a resume gives each rank its own stream back.

Run by torchrun (``torchrun --standalone --nproc_per_node 2 tests/test_rank_streams.py OUT``) each rank seeds
its stream (`seed_rank`), draws, writes a resume checkpoint through `stage_loop.save_last`, draws, scrambles
its generator, resumes through `stage_loop.resume_progress` and draws again; it also wraps a model it
initialised from its own stream with FSDP2. The tests compare what the ranks wrote.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from compt import distributed
from compt.config import TrainConfig
from compt.distributed import DistInfo
from compt.train import stage_loop
from compt.train.state import Progress, restore_rank_rng, rng_state

SEED = 7
TORCHRUN = Path(sys.executable).with_name("torchrun")


class _Task(nn.Module):
    """The least a `LoopState.task` needs for `save_last` / `resume_progress`."""

    def __init__(self) -> None:
        super().__init__()
        self.student = nn.Linear(3, 2)

    def extra_state(self) -> dict:
        return {}


def _save_draw_resume_draw(out: Path, info: DistInfo) -> tuple[torch.Tensor, torch.Tensor]:
    """(draws after save_last, draws after scrambling and resume_progress) on this rank."""
    task = _Task()
    optimizer = torch.optim.SGD(task.parameters(), lr=0.1)
    spec = SimpleNamespace(train=TrainConfig(), total_steps=3, batch_size=4)
    st = stage_loop.LoopState(out_dir=out, spec=spec, info=info, task=task, optimizer=optimizer, lineage={},
                              progress=Progress(step=1), log=SimpleNamespace(offset=lambda: 0))
    stage_loop.save_last(st, lambda path, weights, state: torch.save({"train_state": state}, path))
    after_save = torch.rand(5)
    torch.manual_seed(12345)  # anything: the resume must restore this rank's own stream
    state = torch.load(out / "last.pt", weights_only=True)["train_state"]
    stage_loop.resume_progress(task, optimizer, state, spec.train)
    return after_save, torch.rand(5)


def _fsdp_params(info: DistInfo) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(this rank's own init, the full parameters after FSDP2 wrapping) of a model drawn from its stream."""
    model = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 2))
    own = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model = distributed.wrap_student(model, info, fsdp=True, blocks=(nn.Linear,))
    return own, {k: v.full_tensor().detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("rank_streams")
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", str(Path(__file__).resolve()), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


def test_ranks_draw_different_numbers_and_rank0_keeps_the_seed(ranks: list[dict]) -> None:
    torch.manual_seed(SEED)
    assert torch.equal(ranks[0]["first"], torch.rand(5))  # rank 0 = a one-process run, bit for bit
    assert not torch.allclose(ranks[0]["first"], ranks[1]["first"])
    assert ranks[1]["seed"] == distributed.rank_seed(SEED, 1) != SEED


def test_resume_restores_each_ranks_own_stream(ranks: list[dict]) -> None:
    for r in ranks:
        assert torch.equal(r["after_save"], r["after_resume"])
    assert not torch.allclose(ranks[0]["after_resume"], ranks[1]["after_resume"])
    assert ranks[0]["saved_rng_entries"] == 2  # one all_gather at checkpoint time: every rank's state


def test_fsdp_wrapping_takes_rank0_weights(ranks: list[dict]) -> None:
    own0, own1 = ranks[0]["own_init"], ranks[1]["own_init"]
    assert not torch.allclose(own0["0.weight"], own1["0.weight"])  # the ranks drew different inits
    for r in ranks:
        for k, v in r["wrapped"].items():
            assert torch.equal(v, own0[k]), k


def test_old_single_state_checkpoint_restores_on_every_rank() -> None:
    torch.manual_seed(3)
    old = rng_state()  # a checkpoint from before per-rank streams: one dict
    expected = torch.rand(4)
    for rank in (0, 1):
        torch.manual_seed(99)
        restore_rank_rng(old, rank)
        assert torch.equal(torch.rand(4), expected)


def test_rank_beyond_the_saved_ones_gets_a_fresh_deterministic_stream() -> None:
    torch.manual_seed(3)
    saved = [rng_state()]  # written by a one-rank run, resumed on two
    rank0 = torch.rand(4)
    draws = []
    for _ in range(2):
        restore_rank_rng(saved, 1)
        draws.append(torch.rand(4))
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], rank0)
    restore_rank_rng(saved, 0)
    assert torch.equal(torch.rand(4), rank0)


def test_rank_seed_is_the_seed_on_rank0_and_distinct_elsewhere() -> None:
    seeds = {distributed.rank_seed(s, r) for s in range(4) for r in range(8)}
    assert len(seeds) == 32 and all(0 <= s < 2**63 for s in seeds)
    assert [distributed.rank_seed(s, 0) for s in range(4)] == list(range(4))
    assert distributed.seed_rank(5, DistInfo()) == 5 and torch.initial_seed() == 5


if __name__ == "__main__":
    root = Path(sys.argv[1])
    info = distributed.init_distributed()
    seed = distributed.seed_rank(SEED, info)
    first = torch.rand(5)
    (root / "stage").mkdir(exist_ok=True)  # shared by the ranks, as a stage's folder is
    after_save, after_resume = _save_draw_resume_draw(root / "stage", info)
    entries = len(torch.load(root / "stage" / "last.pt", weights_only=True)["train_state"]["rng"])
    own, wrapped = _fsdp_params(info)
    torch.save({"seed": seed, "first": first, "after_save": after_save, "after_resume": after_resume,
                "saved_rng_entries": entries, "own_init": own, "wrapped": wrapped}, root / f"rank{info.rank}.pt")
    distributed.shutdown()
