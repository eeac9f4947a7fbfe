"""Command-line edges a new user meets, each a one-line error (exit 2) or a true statement: `compt finetune`'s
numbers (finite settings, a diverging loss), its lock and its stop signal; disk errors that suggest only options
the command has; "next:" hints that a shell can paste; `compt grow --out` that would overwrite a file."""

from __future__ import annotations

import errno
import shlex
import signal
from pathlib import Path

import pytest
import tomli_w
from test_finetune import FAST, colours, write_run  # noqa: F401  (colours: the module's image-folder fixture)

import compt
from compt.cli import main
from compt.errors import Stopped
from compt.runlock import acquire, release


def one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and err.startswith(f"compt {command}: error:"), err
    return err


# ----------------------------------------------------------------------------------------------- finetune numbers
@pytest.mark.parametrize(("flag", "value"), [("--lr", "inf"), ("--lr", "nan"), ("--warmup-epochs", "inf"),
                                             ("--min-lr", "nan"), ("--ema", "nan"), ("--weight-decay", "inf")])
def test_finetune_refuses_settings_that_are_not_finite(flag: str, value: str, tmp_path: Path, capsys) -> None:
    run = write_run(tmp_path / "run")
    assert main(["finetune", str(run), flag, value, "--no-progress"]) == 2
    name = flag[2:].replace("-", "_")
    assert one_line_error(capsys, "finetune").endswith(f"fine-tuning {name} must be a finite number, got {value}")
    assert not list(run.glob("finetune/**/*.json"))


def test_a_diverging_finetune_stops_in_one_line_and_files_no_result(tmp_path: Path, colours: Path,  # noqa: F811
                                                                     capsys) -> None:
    run = write_run(tmp_path / "run")
    assert main(["finetune", str(run), "--data", f"folder:{colours}", "--lr", "1e30", "--epochs", "2",
                 "--batch-size", "16", "--no-progress"]) == 2
    err = one_line_error(capsys, "finetune")
    assert "chain/01-test_A" in err and "the loss became" in err and err.endswith("lower the lr")
    assert not list(run.glob("finetune/**/*.json"))   # nothing for `compt report` to tabulate


# ----------------------------------------------------------------------------------------------- finetune lock, signal
def test_a_second_finetune_on_one_run_is_refused(tmp_path: Path, capsys) -> None:
    run = write_run(tmp_path / "run")
    (run / "finetune").mkdir()
    fd = acquire(run / "finetune")
    try:
        assert main(["finetune", str(run), "--epochs", "1", "--train-samples", "32", "--eval-samples", "16",
                     "--no-progress"]) == 2
    finally:
        release(fd)
    err = one_line_error(capsys, "finetune")
    assert f"fine-tuning folder {run / 'finetune'} is in use by process" in err
    assert err.endswith("wait for that fine-tune to end") and "--run-dir" not in err


@pytest.fixture
def fatal_sigterm():
    """SIGTERM raises RuntimeError unless compt installs its own handler (the default handler would end pytest)."""
    def die(signum, frame):
        raise RuntimeError("SIGTERM reached the default handler")

    old = signal.signal(signal.SIGTERM, die)
    yield
    signal.signal(signal.SIGTERM, old)


@pytest.mark.usefixtures("fatal_sigterm")
def test_sigterm_stops_a_finetune_in_one_line_and_it_resumes(tmp_path: Path, colours: Path,  # noqa: F811
                                                             monkeypatch, capsys) -> None:
    import os

    import compt.clip.finetune.runner as runner
    from compt.checkpoint import save_checkpoint
    from compt.clip.models import create_model, get_model_config

    one = save_checkpoint(tmp_path / "one.pt", state_dict=create_model("test/A").state_dict(),
                          model_config=get_model_config("test/A"))
    real_save = runner.atomic_save

    def signalled_after_saving(obj, path):  # noqa: ANN001, ANN202  (a SIGTERM after every epoch's state)
        real_save(obj, path)
        os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(runner, "atomic_save", signalled_after_saving)
    args = ["finetune", str(one), "--data", f"folder:{colours}", "--epochs", "3", "--batch-size", "16",
            "--no-progress"]
    assert main(args) == 2
    assert one_line_error(capsys, "finetune") == ("compt finetune: error: stopped by SIGTERM; finished members and "
                                                  "epochs are kept — run the same command again to resume")
    with pytest.raises(Stopped):   # the library call too, resumed after epoch 1 and stopped after epoch 2
        compt.finetune_run(one, data=f"folder:{colours}", progress=False, epochs=3, batch_size=16)
    assert "resuming from its own checkpoint after epoch 1 of 3" in capsys.readouterr().out
    monkeypatch.setattr(runner, "atomic_save", real_save)
    assert main(args) == 0
    assert "resuming from its own checkpoint after epoch 2 of 3" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------- disk errors, hints
def _read_only(monkeypatch, path: Path) -> None:
    def read_only(*a, **kw):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(Path, "mkdir", read_only)


def test_read_only_errors_suggest_only_options_the_command_has(tmp_path: Path, monkeypatch, capsys) -> None:
    run = write_run(tmp_path / "run")
    lm_run = tmp_path / "lm"
    lm_run.mkdir()
    (lm_run / "config.toml").write_text(tomli_w.dumps({"name": "lm", "data": {"kind": "text"},
                                                       "chain": [{"model": "lm/test-A", "epochs": 1}]}))

    def harness_read_only(*a, **kw):
        raise OSError(errno.EROFS, "Read-only file system", str(lm_run / "lm-eval"))

    monkeypatch.setattr("compt.lm.harness.run_harness", harness_read_only)
    _read_only(monkeypatch, run / "finetune")
    assert main(["finetune", str(run), "--no-progress"]) == 2
    assert one_line_error(capsys, "finetune").endswith("Read-only file system — work on a writable copy")
    assert main(["eval", str(lm_run), "--lm-eval", "held-out"]) == 2
    assert one_line_error(capsys, "eval").endswith("Read-only file system — work on a writable copy")
    assert main(["report", str(run), "--out", str(tmp_path / "rep")]) == 2
    assert one_line_error(capsys, "report").endswith("Read-only file system — choose a writable folder (--out)")


def test_the_next_hint_quotes_a_path_with_spaces(tmp_path: Path, monkeypatch, capsys) -> None:
    from compt import chain

    config = tmp_path / "run.toml"
    config.write_text(tomli_w.dumps({"name": "n", "chain": [{"model": "test/A", "epochs": 1}]}))
    monkeypatch.setattr(chain, "train_run", lambda cfg, run_dir, **kw: {})
    run_dir = tmp_path / "my runs" / "it's here"
    assert main(["train", str(config), "--run-dir", str(run_dir)]) == 0
    hint = capsys.readouterr().out.strip().splitlines()[-1]
    assert hint == f"done: {run_dir}  (next: compt report {shlex.quote(str(run_dir))})"
    assert shlex.split(hint.split("next: ", 1)[1].rstrip(")")) == ["compt", "report", str(run_dir)]


def test_grow_refuses_to_overwrite_an_existing_file(tmp_path: Path, capsys) -> None:
    from compt.checkpoint import save_checkpoint
    from compt.clip.models import create_model, get_model_config

    parent = save_checkpoint(tmp_path / "a.pt", state_dict=create_model("test/A").state_dict(),
                             model_config=get_model_config("test/A"))
    out = tmp_path / "b.pt"
    out.write_bytes(b"someone's work")
    assert main(["grow", "--from", str(parent), "--to", "test/B", "--op", "preserve", "--out", str(out)]) == 2
    assert one_line_error(capsys, "grow").endswith(f"--out {out} already exists; choose another path, or delete it "
                                                   f"first to replace it")
    assert out.read_bytes() == b"someone's work"
