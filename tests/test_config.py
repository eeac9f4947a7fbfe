"""Run-config parsing, typed overrides, and every validation error (one line, exit code 2, no traceback)."""

import pytest

from compt.cli import main
from compt.config import load_config
from compt.errors import UserError

GOOD = """
name = "t"
baseline_epochs = 3
[data]
num_samples = 64
[train]
batch_size = 16
[[chain]]
model = "test/A"
epochs = 3
[[chain]]
model = "test/B"
epochs = 1
growth = "preserve"
distill = "fd"
"""


def write(tmp_path, text: str):
    p = tmp_path / "run.toml"
    p.write_text(text)
    return p


def test_overrides_are_typed(tmp_path) -> None:
    cfg = load_config(write(tmp_path, GOOD), ["train.lr=3e-4", "chain.1.epochs=2.5", "baselines=true",
                                              "data.num_samples=128"])
    assert cfg.train.lr == 3e-4 and cfg.chain[1].epochs == 2.5 and cfg.baselines is True
    assert cfg.data.num_samples == 128 and isinstance(cfg.data.num_samples, int)


@pytest.mark.parametrize("override, message", [
    ("train.lr=fast", "train.lr: expected a number"),
    ("data.num_samples=1.5", "expected an integer"),
    ("baselines=maybe", "expected true/false"),
    ("train.warmup=1", "unknown key in \\[train\\] 'warmup'; did you mean 'warmup_steps'"),
    ("chain.5.epochs=1", "no chain member '5'"),
    ("lr", "not of the form key=value"),
])
def test_bad_overrides(tmp_path, override: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_config(write(tmp_path, GOOD), [override])


@pytest.mark.parametrize("edit, message", [
    (("test/B", "test/Y"), "unknown model 'test/Y'; did you mean"),
    (('epochs = 1', 'epochs = 0'), "member 2 \\(test/B\\): epochs must be positive"),
    (('epochs = 1', 'epochs = -2'), "epochs must be positive"),
    (('epochs = 1', 'epochs = 1\nlr = -1e-3'), "member 2 \\(test/B\\): lr must be positive, got -0.001"),
    (('growth = "preserve"', 'growth = "grow"'), "unknown growth operator 'grow'"),
    (('distill = "fd"', 'distill = "kd"'), "unknown distillation loss 'kd'"),
    (('model = "test/A"', 'model = "test/C"'), "not ascending in compute: member 2 test/B .* member 1 test/C"),
])
def test_validation_errors(tmp_path, edit, message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_config(write(tmp_path, GOOD.replace(*edit)))


def test_growth_that_shrinks_or_changes_patch_is_refused(tmp_path) -> None:
    # test/C has a wider vision tower but the same text width as... use a Swin→ViT chain: patch size differs.
    text = GOOD.replace('model = "test/A"', 'model = "test/Swin-A"').replace("test/B", "tiny/ViT-S")
    with pytest.raises(UserError, match="test/Swin-A.*tiny/ViT-S|patch|Swin"):
        load_config(write(tmp_path, text))


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys) -> None:
    path = write(tmp_path, GOOD.replace("test/B", "test/Y"))
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("compt plan: error: unknown model 'test/Y'") and "\n" not in err
    assert "Traceback" not in err


def test_missing_file_and_bad_toml(tmp_path) -> None:
    with pytest.raises(UserError, match="run config not found"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(UserError, match="invalid TOML"):
        load_config(write(tmp_path, "name = "))


def test_a_chain_table_is_named_by_its_key_and_its_1_based_member(tmp_path) -> None:
    text = GOOD.replace('model = "test/B"', 'model = "test/B"\nepoch = 1', 1)
    with pytest.raises(UserError, match=r"unknown key in \[chain\.1\] \(member 2\) 'epoch'; did you mean 'epochs'"):
        load_config(write(tmp_path, text))
