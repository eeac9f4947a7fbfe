"""Two gloo processes on CPU train the same LM stages as one process with the same global batch (DDP, FSDP2).

Run by torchrun (``torchrun --standalone --nproc_per_node 2 tests/test_lm_distributed.py OUT``) this file trains
every stage of `STAGES` into OUT/<name>; the test trains them in one process and compares losses and weights.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import final_weights, read_metrics

from compt import distributed
from compt.config import MemberConfig, TrainConfig
from compt.lm.data import held_out_evaluator
from compt.lm.models import create_lm, get_lm_config
from compt.lm.text import TokenWindows
from compt.stage import resolve_spec
from compt.train import train_stage

_DISTILL = {"teacher": "lm/test-A", "distill": "kl+hidden", "grad_clip": 1.0}
STAGES = {
    "ddp_distill": {**_DISTILL, "accum_steps": 2},     # hidden-state projection outside DDP, 2 micro-batches
    "fsdp_distill": {**_DISTILL, "fsdp": True},        # FSDP2 units = decoder layers, tied embedding at the root
}
TORCHRUN = Path(sys.executable).with_name("torchrun")


def lm_stage_kwargs(out_dir: Path, *, teacher: str, distill: str, **train) -> dict:
    """A tiny distilled LM stage: lm/test-B from a seeded lm/test-A teacher on 64 windows of random tokens."""
    tokens = torch.randint(0, 256, (64 * 16 + 1,), generator=torch.Generator().manual_seed(0)).numpy()
    torch.manual_seed(1)
    t_cfg = get_lm_config(teacher)
    t_state = create_lm(t_cfg).state_dict()
    torch.manual_seed(0)
    data = TokenWindows(tokens, 16, 0, 48 * 16 + 1)
    spec = resolve_spec(model=get_lm_config("lm/test-B"), parent=t_cfg, from_scratch=False, samples=len(data),
                        captions=1, member=MemberConfig(model="lm/test-B", epochs=1, distill=distill,
                                                        distill_weight=1.0),
                        train=TrainConfig(**{"batch_size": 16, "warmup_steps": 2, "stage_warmup_steps": 2,
                                             "log_every_steps": 1, **train}))
    return {"spec": spec, "out_dir": out_dir, "init_state": create_lm("lm/test-B").state_dict(), "dataset": data,
            "evaluate": held_out_evaluator(TokenWindows(tokens, 16, 48 * 16), 16), "teacher_state": t_state,
            "progress": False}


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("two_proc_lm")
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", str(Path(__file__).resolve()), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.mark.parametrize("name", list(STAGES))
def test_two_processes_match_one(two_process_runs: Path, tmp_path: Path, name: str) -> None:
    train_stage(**lm_stage_kwargs(tmp_path, **STAGES[name]))
    one, two = read_metrics(tmp_path), read_metrics(two_process_runs / name)
    assert len(one) == len(two) == 3
    for a, b in zip(one, two, strict=True):
        a.pop("kind"), b.pop("kind")
        assert a == pytest.approx(b, rel=1e-4, abs=1e-5)
    wa, wb = final_weights(tmp_path), final_weights(two_process_runs / name)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-3, atol=1e-4, msg=lambda m, k=k: f"{k}: {m}")


if __name__ == "__main__":
    root = Path(sys.argv[1])
    for stage, kw in STAGES.items():
        train_stage(**lm_stage_kwargs(root / stage, **kw))
    distributed.shutdown()
