"""Two gloo processes on CPU train the same stages as one process with the same global batch.

Run by torchrun (``torchrun --standalone --nproc_per_node 2 tests/test_distributed.py OUT``) this file trains
every stage of `STAGES` into OUT/<name>; the test then trains them in one process and compares the losses
step by step, the evaluations (``evaluate=True``: retrieval + feature sums through ``encode_image`` /
``encode_text`` of the wrapped student) and the final weights (float tolerance: the reduction order differs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from helpers import csv_of_pngs, csv_stopping_run, final_weights, read_metrics, stage_kwargs, toy_evaluate

from compt import distributed
from compt.chain import train_run
from compt.config import config_from_dict
from compt.errors import UserError
from compt.train import train_stage

_DISTILL = {"model": "test/C", "teacher": "test/B", "distill": "fd+affinity", "epochs": 1}
STAGES = {
    "ddp_clip": {"model": "test/B", "epochs": 1.5},
    # live teacher, projection outside DDP, 2 micro-batches per step (4 samples per rank each), clipping
    "ddp_distill": {**_DISTILL, "teacher_cache": False, "accum_steps": 2, "grad_clip": 1.0},
    # teacher cache filled by both ranks and all-gathered; evaluated every epoch
    "ddp_cached": {**_DISTILL, "teacher_cache": True, "evaluate": True, "eval_every_epochs": 1},
    # FSDP2: sharded blocks, replicated logit scale and projection, clipping over mixed tensors, evaluation
    "fsdp_distill": {**_DISTILL, "teacher_cache": True, "fsdp": True, "grad_clip": 1.0, "evaluate": True},
    "fsdp_clip": {"model": "test/B", "epochs": 1.5, "fsdp": True, "evaluate": True, "eval_every_epochs": 1},
    # trained until an unreachable target: probes at steps 2, 4, 6 branch, validate (rank 0 decides) and restore
    "ddp_stopping": {**_DISTILL, "epochs": 2, "teacher_cache": False, "evaluate": True,
                     "member": {"target": {"retrieval_r1": 101.0}, "probe_every": 0.5}},
}
# a stage again, crashed after step 2 and resumed from its memory-mapped checkpoint: FSDP2 (sharded optimizer
# state round trip) and DDP (every rank maps the whole optimizer state and updates it in place)
RESUMED = {"fsdp_resumed": "fsdp_distill", "ddp_resumed": "ddp_distill"}
TORCHRUN = Path(sys.executable).with_name("torchrun")
# a whole chain (growth, evaluation, baselines) run by `train_run` while rank 1 records every write it makes there
CHAIN = {"name": "rank0-writes", "baselines": True,
         "data": {"kind": "synthetic", "num_samples": 32, "eval_samples": 16, "probe_samples": 0},
         "train": {"batch_size": 16, "warmup_steps": 1, "stage_warmup_steps": 1, "loader_workers": 0},
         "chain": [{"model": "test/A", "epochs": 1}, {"model": "test/B", "epochs": 1, "growth": "preserve"}]}
# a chain on a CSV of PNGs (made before torchrun starts) whose grown member trains until an unreachable target:
# the carved validation split, every probe and the stage's end the same on 2 ranks as on 1
CSV_STOP = {"target": {"retrieval_r1": 101.0}, "probe_every": 1.0}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def record_writes(root: Path, into: list[str]) -> None:
    """Append to `into` every file this process opens for writing (or creates), renames or removes under `root`
    (Python audit events: builtin and os-level opens alike, so torch.save and atomic renames are seen). Folders
    are not counted: every rank makes sure its run and stage folders exist (``mkdir(exist_ok=True)``)."""
    root = root.resolve()

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writes = bool(mode and set(mode) & set("wax+")) or bool(flags & WRITE_FLAGS)
            paths = [path] if writes else []
        else:
            paths = {"os.rename": args[:2], "os.remove": args[:1]}.get(event, [])
        for path in paths:
            if isinstance(path, (str, bytes, os.PathLike)) and Path(os.fsdecode(path)).resolve().is_relative_to(root):
                into.append(f"{event} {os.fsdecode(path)}")

    sys.addaudithook(hook)


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("two_proc")
    csv_of_pngs(out / "csv")
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", str(Path(__file__).resolve()), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def _run(out: Path, evaluate: bool = False, on_step=None, **kw) -> None:
    stops = "target" in kw.get("member", {})
    train_stage(**stage_kwargs(out, **kw), evaluate=toy_evaluate() if evaluate else None, on_step=on_step,
                validate=toy_evaluate(12) if stops else None)


@pytest.mark.parametrize("name", list(STAGES))
def test_two_processes_match_one(two_process_runs: Path, tmp_path: Path, name: str) -> None:
    _run(tmp_path, **STAGES[name])
    for kind in ("train", "eval", "probe"):
        one, two = read_metrics(tmp_path, kind), read_metrics(two_process_runs / name, kind)
        assert len(one) == len(two) > 0 or (kind == "eval" and not STAGES[name].get("evaluate")) or (
            kind == "probe" and "member" not in STAGES[name])
        for a, b in zip(one, two, strict=True):
            a.pop("kind"), b.pop("kind")
            assert a == pytest.approx(b, rel=1e-4, abs=1e-5)
    if STAGES[name].get("teacher_cache"):  # one copy per node, written by local rank 0, mapped by both ranks
        files = json.loads((two_process_runs / f"{name}.cache_files.json").read_text())
        assert files == ["node0.done.json", "node0.image.bf16", "node0.text.bf16"]
        assert not (two_process_runs / name / "teacher_cache").exists()  # deleted once the stage finished
    if "member" in STAGES[name]:   # the probes and the cap's end, every one missed
        probes = read_metrics(two_process_runs / name, "probe")
        assert [(p["step"], p["end"], p["met"]) for p in probes] == [(2, 3, False), (4, 5, False), (6, 7, False),
                                                                      (8, 8, False)]
    wa, wb = final_weights(tmp_path), final_weights(two_process_runs / name)
    assert wa.keys() == wb.keys()
    for k in wa:
        # The key third of in_proj_bias has an exactly zero true gradient (softmax ignores a shift), so AdamW
        # turns float noise into steps of up to lr there: allow a few lr (1e-3) for it.
        atol = 5e-3 if k.endswith("in_proj_bias") else 1e-4
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-3, atol=atol, msg=lambda m, k=k: f"{k}: {m}")


def test_fsdp_and_ddp_give_the_same_numbers_in_fp32(two_process_runs: Path) -> None:
    """fp32 (CPU, gloo): FSDP2 gathers fp32 parameters, so ``fsdp = true`` and ``false`` train test/B to the same
    losses and weights up to float rounding (reduction order) — the exactness that bf16 parameters on GPU give
    up (docs/cluster.md). fsdp_clip also evaluates every epoch, which draws no training randomness."""
    ddp, fsdp = read_metrics(two_process_runs / "ddp_clip"), read_metrics(two_process_runs / "fsdp_clip")
    assert len(ddp) == len(fsdp) > 0
    worst = max(abs(a["loss"] - b["loss"]) / abs(a["loss"]) for a, b in zip(ddp, fsdp, strict=True))
    print(f"fsdp vs ddp, fp32: largest relative loss difference {worst:.2e}")
    assert worst < 1e-5
    wa, wb = final_weights(two_process_runs / "ddp_clip"), final_weights(two_process_runs / "fsdp_clip")
    for k in wa:  # in_proj_bias: see test_two_processes_match_one
        atol = 5e-3 if k.endswith("in_proj_bias") else 1e-4
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-3, atol=atol, msg=lambda m, k=k: f"{k}: {m}")


@pytest.mark.parametrize("name", list(RESUMED))
def test_resume_is_bit_identical(two_process_runs: Path, name: str) -> None:
    a, b = two_process_runs / RESUMED[name], two_process_runs / name
    resumed = json.loads((two_process_runs / f"{name}.steps.json").read_text())
    total = len(read_metrics(a))   # log_every_steps = 1: one train record per step
    assert resumed == list(range(3, total + 1))   # crashed after step 2 (checkpointed), resumed there
    assert read_metrics(a) == read_metrics(b) and read_metrics(a, "eval") == read_metrics(b, "eval")
    wa, wb = final_weights(a), final_weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_csv_run_stops_the_same_on_two_processes(two_process_runs: Path, tmp_path: Path) -> None:
    train_run(config_from_dict(csv_stopping_run(two_process_runs / "csv" / "train.csv", CSV_STOP)), tmp_path,
              progress=False)
    for stage in ("01-test_A", "02-test_B"):
        for kind in ("train", "eval", "probe"):
            one, two = (read_metrics(d / "chain" / stage, kind) for d in (tmp_path, two_process_runs / "csv-stop"))
            assert len(one) == len(two) > 0 or kind == "probe" and stage == "01-test_A"
            for a, b in zip(one, two, strict=True):
                assert a.pop("kind") == b.pop("kind") and a == pytest.approx(b, rel=1e-4, abs=1e-5)
        wa, wb = (final_weights(d / "chain" / stage) for d in (tmp_path, two_process_runs / "csv-stop"))
        for k in wa:  # in_proj_bias: see test_two_processes_match_one
            torch.testing.assert_close(wa[k], wb[k], rtol=1e-3, atol=5e-3 if k.endswith("in_proj_bias") else 1e-4)
    probes = read_metrics(two_process_runs / "csv-stop" / "chain" / "02-test_B", "probe")
    assert [(p["step"], p["end"], p["met"]) for p in probes] == [(6, 7, False), (11, 13, False), (17, 17, False)]


def test_multi_node_run_dir_must_be_shared(two_process_runs: Path) -> None:
    for rank in (0, 1):
        text = (two_process_runs / f"not-shared.{rank}.txt").read_text()
        assert "is not shared by all nodes (1 of 2 ranks cannot read" in text


def test_only_rank_0_writes(two_process_runs: Path) -> None:
    """docs/cluster.md: "Only rank 0 writes files" — in a two-rank chain run, rank 1 writes none in the run."""
    run_dir = two_process_runs / CHAIN["name"]
    assert sorted(p.parent.name for p in run_dir.glob("*/*/final.pt")) == ["01-test_A", "02-test_B", "test_B"]
    rank0, rank1 = (json.loads((two_process_runs / f"rank{r}-writes.json").read_text()) for r in (0, 1))
    written = {Path(w.split(" ", 1)[1]).name for w in rank0}   # the recorder sees rank 0's writes
    assert {"run.json", "result.json", "final.pt", "metrics.jsonl"} <= written, sorted(written)
    assert rank1 == [], "rank 1 wrote:\n" + "\n".join(rank1)


def test_single_process_helpers_are_identities() -> None:
    info = distributed.init_distributed()
    assert (info.rank, info.world_size, info.is_main) == (0, 1, True)
    x = torch.randn(3, 2, requires_grad=True)
    assert distributed.gather_with_grad(x) is x and distributed.gather_no_grad(x) is x
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap_student(model, info) is model and distributed.unwrap(model) is model
    assert distributed.unmanaged_params(model.parameters(), model) == []


def test_process_group_timeout_covers_rank0_checkpoint_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """init_distributed passes `pg_timeout` (1 h, or COMPT_PG_TIMEOUT_S) to init_process_group."""
    import datetime

    calls = []
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend, **kw: calls.append((backend, kw)))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("COMPT_PG_TIMEOUT_S", raising=False)
    distributed.init_distributed()
    monkeypatch.setenv("COMPT_PG_TIMEOUT_S", "90")
    distributed.init_distributed()
    assert [kw["timeout"] for _, kw in calls] == [datetime.timedelta(hours=1), datetime.timedelta(seconds=90)]
    for bad in ("0", "soon"):
        monkeypatch.setenv("COMPT_PG_TIMEOUT_S", bad)
        with pytest.raises(UserError, match="COMPT_PG_TIMEOUT_S"):
            distributed.init_distributed()


if __name__ == "__main__":
    root = Path(sys.argv[1])

    def list_cache(stage: str) -> Callable[[int], None]:
        """on_step: rank 0 records the stage's teacher-cache files at step 1 (they are gone once it finishes)."""
        def record(step: int) -> None:
            if step == 1 and distributed.init_distributed().is_main:
                files = sorted(p.name for p in (root / stage / "teacher_cache").iterdir())
                (root / f"{stage}.cache_files.json").write_text(json.dumps(files))
        return record

    for stage, kw in STAGES.items():
        _run(root / stage, **kw, on_step=list_cache(stage) if kw.get("teacher_cache") else None)

    def crash(step: int) -> None:
        if step == 2:
            raise RuntimeError("simulated crash")

    for name, base in RESUMED.items():
        kw = {**STAGES[base], "ckpt_every_steps": 1}
        try:
            _run(root / name, **kw, on_step=crash)
        except RuntimeError:
            resumed: list[int] = []   # the optimizer steps the resumed call takes (1-based: the steps done)
            _run(root / name, **kw, on_step=resumed.append)
            if distributed.init_distributed().is_main:
                (root / f"{name}.steps.json").write_text(json.dumps(resumed))
    writes: list[str] = []
    record_writes(root / CHAIN["name"], writes)
    train_run(config_from_dict(CHAIN), root / CHAIN["name"], progress=False)
    (root / f"rank{os.environ['RANK']}-writes.json").write_text(json.dumps(writes))
    train_run(config_from_dict(csv_stopping_run(root / "csv" / "train.csv", CSV_STOP)), root / "csv-stop",
              progress=False)
    # pretend to be two single-rank nodes: a shared folder passes, one folder per node fails on every rank
    os.environ["LOCAL_WORLD_SIZE"] = "1"
    rank = int(os.environ["RANK"])
    (root / f"local{rank}").mkdir()
    distributed.check_shared_dir(root)
    try:
        distributed.check_shared_dir(root / f"local{rank}")
    except UserError as e:
        (root / f"not-shared.{rank}.txt").write_text(str(e))
    distributed.shutdown()
