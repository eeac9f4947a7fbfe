"""Issue 13, continued: bad data rows, full or read-only disks, malformed files, truncated checkpoints, signals,
resume settings and RNG-independent initial weights (the shared run helpers live in test_hardening)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import ToyPairs, final_weights, stage_kwargs
from test_hardening import one_line_error, raw_with, run, toml_file

from compt import chain as chain_mod
from compt.chain import settings_changes
from compt.checkpoint import load_checkpoint, save_checkpoint
from compt.cli import main
from compt.clip.models import create_model, get_model_config
from compt.config import load_config
from compt.errors import UserError, one_line
from compt.runlock import acquire, release


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished one-member run, as in test_hardening."""
    d = tmp_path_factory.mktemp("finished")
    run(d)
    return d


# ----------------------------------------------------------------------------------------------- 4. bad data
def write_pngs(folder: Path, n: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (8, 8), ((37 * i) % 256, (91 * i) % 256, (53 * i) % 256)).save(folder / f"{i}.png")


def test_non_utf8_caption_is_a_skipped_counted_row(tmp_path: Path, caplog, capsys) -> None:
    from compt.clip.data import build_train_dataset
    from compt.clip.settings import ClipDataConfig

    write_pngs(tmp_path, 120)
    rows = [f"{i}.png,caption {i}".encode() for i in range(120)]
    rows[7] = b"7.png,caf\xe9 latte"  # latin-1, not UTF-8
    (tmp_path / "a.csv").write_bytes(b"filepath,caption\n" + b"\n".join(rows) + b"\n")
    data = ClipDataConfig(kind="csv", path=str(tmp_path / "a.csv"), eval_path=str(tmp_path / "a.csv"))
    with caplog.at_level("WARNING", logger="compt.clip.data"):
        assert len(build_train_dataset(data, get_model_config("test/A"))) == 119
    assert "1 of 120 samples" in caplog.text and "caption is not valid UTF-8" in caplog.text
    cfg = get_model_config("test/A")
    ckpt = save_checkpoint(tmp_path / "m.pt", state_dict=create_model(cfg).state_dict(), model_config=cfg)
    assert main(["eval", str(ckpt), "--data", "csv", "--data-path", str(tmp_path / "a.csv"),
                 "--eval-samples", "50", "--probe-samples", "0"]) == 0


def test_bad_data_limit_is_taken_over_the_whole_source_not_a_split(tmp_path: Path) -> None:
    from compt.clip.data import build_eval_suite, build_train_dataset
    from compt.clip.data.real import subset
    from compt.clip.settings import ClipDataConfig

    n = 400                                          # 2 bad = 0.5 % of the source; both in the 40 held out
    held = sorted(subset(n, 40, 0, stream=1).tolist())
    write_pngs(tmp_path, n)
    (tmp_path / f"{held[0]}.png").unlink()                          # missing file (found when indexing)
    (tmp_path / f"{held[1]}.png").write_bytes(b"not an image")      # undecodable (found when decoding)
    (tmp_path / "a.csv").write_text("filepath,caption\n" + "".join(f"{i}.png,pic {i}\n" for i in range(n)))
    data = ClipDataConfig(kind="csv", path=str(tmp_path / "a.csv"), eval_samples=40)
    cfg = get_model_config("test/A")
    suite = build_eval_suite(data, cfg)
    assert len(suite.retrieval.images) + len(build_train_dataset(data, cfg)) == n - 2


def test_bad_data_found_in_a_loader_worker_is_one_line(tmp_path: Path, capsys) -> None:
    write_pngs(tmp_path / "img", 60)
    for i in range(3):                               # 3 of 60 > 1 %, found only when decoding lazily
        (tmp_path / f"img/{i}.png").write_bytes(b"garbage")
    (tmp_path / "img/a.csv").write_text("filepath,caption\n" + "".join(f"{i}.png,pic {i}\n" for i in range(60)))
    raw = raw_with(data__kind="csv", data__path=str(tmp_path / "img/a.csv"), data__predecode_max=1,
                   data__eval_samples=8, train__loader_workers=1)
    assert main(["train", str(toml_file(tmp_path, raw)), "--run-dir", str(tmp_path / "run"), "--no-progress"]) == 2
    err = one_line_error(capsys)
    assert "more than data.max_bad_fraction" in err and "DataLoader worker" not in err


def test_one_line_keeps_the_innermost_user_error() -> None:
    wrapped = ("Caught UserError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
               '  File "x.py", line 1, in f\ncompt.errors.UserError: a.csv: 3 of 60 samples are bad\n')
    assert one_line(wrapped) == "a.csv: 3 of 60 samples are bad"


# ----------------------------------------------------------------------------------------------- 5. environment
def shutil_usage(total: int, used: int, free: int):

    return shutil._ntuple_diskusage(total, used, free)


def test_disk_full_while_saving_is_one_line_and_leaves_no_temp_file(tmp_path: Path, monkeypatch, capsys) -> None:
    import compt.checkpoint as ck

    def full_disk_save(obj, f, *a, **kw):
        f.write(b"PK\x03\x04partial")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 640 vs 512")

    monkeypatch.setattr(ck.torch, "save", full_disk_save)
    monkeypatch.setattr(ck.shutil, "disk_usage", lambda p: shutil_usage(100, 100, 0))
    d = tmp_path / "run"
    assert main(["train", str(toml_file(tmp_path)), "--run-dir", str(d), "--no-progress"]) == 2
    assert "no space left on device" in one_line_error(capsys)
    assert not list(d.rglob("*.tmp")) and not list(d.rglob(".*.tmp"))


class BrokenPairs(ToyPairs):
    """Sample 20 cannot be read (found by a loader worker)."""

    def __getitem__(self, i: int):
        if i == 20:
            raise ValueError("unreadable sample")
        return super().__getitem__(i)


@pytest.mark.parametrize("where", ["step", "worker"])
def test_a_failed_stage_leaves_no_loader_worker_behind(tmp_path: Path, where: str) -> None:
    """The workers ignore SIGTERM, so one left alive by a failed stage hangs the interpreter's exit (multiprocessing
    joins it there). The exception's traceback keeps the training loop's frames alive, as the test's does here."""
    import multiprocessing

    from compt.train import train_stage

    def fail(step: int) -> None:
        raise ValueError("unreadable sample")

    data = (ToyPairs if where == "step" else BrokenPairs)(64, captions=2)
    kwargs = stage_kwargs(tmp_path / "s", loader_workers=1, threads=1, dataset=data)
    before = set(multiprocessing.active_children())
    with pytest.raises(ValueError, match="unreadable sample") as failed:
        train_stage(**kwargs, on_step=fail if where == "step" else None)
    assert ("DataLoader worker" in str(failed.value)) == (where == "worker")
    assert failed.traceback and set(multiprocessing.active_children()) - before == set()


def test_a_full_disk_is_named_even_when_the_failed_file_freed_its_space(tmp_path: Path, monkeypatch) -> None:
    """torch's zip writer fails with "file write failed"; once the partial file is removed the disk is not full
    any more, so the message must not depend on the free space measured afterwards."""
    import compt.checkpoint as ck

    def failing_save(obj, f, *a, **kw):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(ck.torch, "save", failing_save)
    monkeypatch.setattr(ck.shutil, "disk_usage", lambda p: shutil_usage(100, 10, 2**40))   # plenty, afterwards
    with pytest.raises(UserError, match="no space left on device"):
        ck.atomic_save({"x": 1}, tmp_path / "a.pt")
    assert not list(tmp_path.glob(".*.tmp"))


def test_disk_full_on_a_json_write_is_one_line_and_leaves_no_temp_file(tmp_path: Path, monkeypatch, capsys) -> None:
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(".run.json."):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    d = tmp_path / "run"
    assert main(["train", str(toml_file(tmp_path)), "--run-dir", str(d), "--no-progress"]) == 2
    assert "run.json: No space left on device — free some space" in one_line_error(capsys)
    assert not list(d.rglob("*.tmp"))


@pytest.mark.parametrize("command", ["train", "report", "grow"])
def test_read_only_filesystem_is_one_line(command: str, finished: Path, tmp_path: Path, monkeypatch,
                                          capsys) -> None:
    def read_only(*a, **kw):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "x"))

    monkeypatch.setattr(Path, "mkdir", read_only)
    args = {"train": ["train", str(toml_file(tmp_path)), "--run-dir", str(tmp_path / "r"), "--no-progress"],
            "report": ["report", str(finished), "--out", str(tmp_path / "rep")],
            "grow": ["grow", "--from", str(finished / "chain/01-test_A/final.pt"), "--to", "test/B", "--op",
                     "preserve", "--out", str(tmp_path / "g/child.pt")]}[command]
    assert main(args) == 2
    assert "Read-only file system — choose a writable folder" in one_line_error(capsys)


def test_malformed_model_config_and_blocked_pickle_are_named_as_such(tmp_path: Path, capsys) -> None:
    import argparse

    cfg = get_model_config("test/A")
    payload = torch.load(save_checkpoint(tmp_path / "m.pt", state_dict=create_model(cfg).state_dict(),
                                         model_config=cfg), weights_only=True)
    torch.save({**payload, "model_config": {"name": "test/A"}}, tmp_path / "bad.pt")
    assert main(["eval", str(tmp_path / "bad.pt")]) == 2
    assert "its model_config is malformed (KeyError" in one_line_error(capsys)
    torch.save({"state_dict": argparse.Namespace(x=1)}, tmp_path / "pickle.pt")  # an arbitrary Python object
    with pytest.raises(UserError, match=r"refusing to load .*argparse.Namespace, which safe loading"):
        load_checkpoint(tmp_path / "pickle.pt")
    torch.save({"state_dict": RunsCode()}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match=r"refusing to load .*getpid, which safe loading"):
        load_checkpoint(tmp_path / "evil.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint" * 100)
    with pytest.raises(UserError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "garbage.pt")


class RunsCode:
    """A pickle that calls a function when loaded unsafely (a harmless one here)."""

    def __reduce__(self):
        return (os.getpid, ())


# ----------------------------------------------------------------------------------------------- 6. smaller
def test_a_truncated_final_pt_is_detected_and_rebuilt(finished: Path, tmp_path: Path, capsys) -> None:

    d = tmp_path / "copy"
    shutil.copytree(finished, d)
    final = d / "chain/01-test_A/final.pt"
    good = final_weights(final.parent)
    final.write_bytes(final.read_bytes()[:-100])
    assert main(["report", str(d)]) == 0
    assert "final.pt has" in capsys.readouterr().err
    run(d)
    assert capsys.readouterr().err.count("is not done — rebuilding it") == 1   # said once, not by runner and trainer
    assert all(torch.equal(good[k], v) for k, v in final_weights(final.parent).items())
    recorded = json.loads((final.parent / "result.json").read_text())["final_pt"]
    assert recorded["size"] == final.stat().st_size


def test_sigterm_marks_the_stage_interrupted_not_failed(tmp_path: Path, monkeypatch) -> None:
    import compt.train

    real = compt.train.train_stage
    monkeypatch.setattr(compt.train, "train_stage",
                        lambda *a, **kw: real(*a, **kw, on_step=lambda s: os.kill(os.getpid(), signal.SIGTERM)))
    with pytest.raises(UserError, match="stopped by SIGTERM"):
        run(tmp_path)
    assert json.loads((tmp_path / "run.json").read_text())["stages"][0]["state"] == "interrupted"


def test_workers_and_threads_may_change_on_resume(finished: Path, monkeypatch) -> None:
    monkeypatch.setattr("compt.train.train_stage", lambda *a, **kw: pytest.fail("retrained"))
    old = json.loads((finished / "chain/01-test_A/lineage.json").read_text())["fingerprint"]
    old = {**old, "data": {**old["data"], "workers": 0}}  # fingerprints written before this change hold it
    (finished / "chain/01-test_A/lineage.json").write_text(json.dumps({"fingerprint": old}))
    run(finished, raw_with(data__workers=2, train__loader_workers=1, train__threads=1))


def test_changed_settings_name_members_1_based() -> None:
    old = {"members": [{"epochs": 1}, {"epochs": 1}, {"epochs": 1}]}
    new = {"members": [{"epochs": 1}, {"epochs": 1}, {"epochs": 2}]}
    assert settings_changes(old, new) == ["member 3.epochs: 1 -> 2"]
    assert settings_changes({"members": [{"epochs": 1}]}, {"members": [{"epochs": 2}]}, first_member=3) == \
        ["member 3.epochs: 1 -> 2"]  # a baseline's fingerprint holds its own member only


def test_grow_refuses_to_overwrite_another_models_open_clip_config(finished: Path, tmp_path: Path, capsys) -> None:
    parent = str(finished / "chain/01-test_A/final.pt")
    grow = ["grow", "--from", parent, "--op", "preserve"]
    assert main([*grow, "--to", "test/B", "--out", str(tmp_path / "b.pt")]) == 0
    assert main([*grow, "--to", "test/B", "--out", str(tmp_path / "b2.pt"), "--seed", "1"]) == 0  # same model
    assert main([*grow, "--to", "test/C", "--out", str(tmp_path / "c.pt")]) == 2
    assert "already describes another model" in one_line_error(capsys)
    config = json.loads((tmp_path / "open_clip_config.json").read_text())["model_cfg"]
    assert config["embed_dim"] == get_model_config("test/B").embed_dim and not (tmp_path / "c.pt").exists()


def test_initial_weights_do_not_depend_on_what_the_process_drew_before(finished: Path, tmp_path: Path,
                                                                        monkeypatch) -> None:
    import compt.clip.data

    def drawing(real):
        def build(*a, **kw):
            torch.randn(1000)  # e.g. a data source or evaluation split drawn with the global RNG
            return real(*a, **kw)
        return build

    for name in ("build_train_dataset", "build_eval_suite"):
        monkeypatch.setattr(compt.clip.data, name, drawing(getattr(compt.clip.data, name)))
    run(tmp_path)
    wa, wb = final_weights(finished / "chain/01-test_A"), final_weights(tmp_path / "chain/01-test_A")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_from_stage_checks_everything_before_deleting_anything(tmp_path: Path) -> None:
    raw = raw_with(data__num_samples=32)
    raw.update(baselines=True, baseline_epochs=1,
               chain=[{"model": "test/A", "epochs": 1}, {"model": "test/B", "epochs": 0.5}])
    run(tmp_path, raw)
    changed = {**raw, "baseline_epochs": 2}  # baseline-2 is not rerun by --from-stage chain-2: refused
    with pytest.raises(UserError, match=r"stage baseline-2 \(test/B\) was run with other settings"):
        run(tmp_path, changed, from_stage="chain-2")
    assert (tmp_path / "chain/02-test_B/final.pt").is_file()  # nothing was deleted


def test_load_config_example_still_valid() -> None:
    cfg = load_config(Path(__file__).with_name("data") / "test-chain.toml")
    assert chain_mod.plan_stages(cfg, True)[0].key == "chain-1"


LOCK_SCRIPT = """
import sys
from pathlib import Path

from compt import distributed
from compt.errors import UserError
from compt.runlock import run_lock
from compt.threads import resolve_threads

info = distributed.init_distributed()
for run_dir in sys.argv[1:]:
    try:
        with run_lock(Path(run_dir)):
            distributed.barrier()  # every rank is inside the lock at once: they share it
            print(f"rank {info.rank} inside, {resolve_threads(0)['local_ranks']} local ranks", flush=True)
    except UserError as e:
        print(f"rank {info.rank} refused: {e}", flush=True)
distributed.shutdown()
"""


def test_torchrun_ranks_share_the_lock_and_are_refused_together(tmp_path: Path) -> None:
    script, free, held = tmp_path / "lock_job.py", tmp_path / "free", tmp_path / "held"
    script.write_text(LOCK_SCRIPT)
    free.mkdir()
    held.mkdir()
    cmd = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node", "2", str(script),
           str(free), str(held)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    fd = acquire(held)  # another job holds it: both ranks stop (rank 1 does not hang)
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env).stdout
    finally:
        release(fd)
    assert "rank 0 inside, 2 local ranks" in out and "rank 1 inside" in out
    assert "rank 0 refused: run directory" in out and "rank 1 refused: run directory" in out
