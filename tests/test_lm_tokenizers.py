"""Hugging Face tokenizers for language-model runs: loading (folder or tokenizer.json, EOS, identity), a run trained
with one and exported with it, the refusals (init, resume, eval, grow), the vocabulary rule and the plan's tokens per
parameter. Every tokenizer is trained and saved here (the `tokenizers` library), nothing is downloaded."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tomli_w
from test_lm_chain import TEXT

from compt.chain import train_run
from compt.checkpoint import load_checkpoint
from compt.cli import main
from compt.config import config_from_dict, validate
from compt.errors import UserError
from compt.lm.data import open_tokenizer
from compt.lm.tokenizers import TokenizerSource, check_ids, load_hf, load_tokenizer, stored_tokenizer, tokenizer_source

SENTENCES = ["the quick brown fox jumps over the lazy dog", "def f(x):\n    return x * 2  # double",
             "language models read token ids", *TEXT.splitlines()[:40]]


def bpe(vocab_size: int, special: str = "</s>", texts: list[str] = SENTENCES):
    """A byte-level BPE of `vocab_size` ids (256 bytes, `special`, merges) trained on `texts`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[special],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    return tok


def save_folder(tok, folder: Path, eos: str | None = "</s>") -> Path:
    from transformers import PreTrainedTokenizerFast

    PreTrainedTokenizerFast(tokenizer_object=tok, **({"eos_token": eos} if eos else {})).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> Path:
    """A 262-id tokenizer (fits the lm-test vocabulary of 264) saved with save_pretrained, EOS ``</s>``."""
    return save_folder(bpe(262), tmp_path_factory.mktemp("tok") / "hf-262")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("text")
    (root / "a.txt").write_text(TEXT[: len(TEXT) // 2])
    (root / "b.txt").write_text(TEXT[len(TEXT) // 2:])
    return root


def raw(corpus: Path, tokenizer: str | None, **data) -> dict:
    return {"name": "lm-hf", "baseline_epochs": 1, "baselines": False,
            "data": {"kind": "text", "path": str(corpus), "num_samples": 24, "eval_samples": 4,
                     **({"tokenizer": tokenizer} if tokenizer else {}), **data},
            "train": {"batch_size": 8, "warmup_steps": 1, "stage_warmup_steps": 1, "lr": 3e-3, "log_every_steps": 1},
            "chain": [{"model": "lm/test-A", "epochs": 1},
                      {"model": "lm/test-B", "epochs": 1, "growth": "preserve", "distill": "kl"}]}


@pytest.fixture(scope="module")
def run(tmp_path_factory, hf_folder: Path, corpus: Path) -> tuple[Path, Path]:
    """(run dir, its tokenizer folder: a copy of `hf_folder` that tests may replace) of a 2-member run."""
    tok = tmp_path_factory.mktemp("runtok") / "tok"
    shutil.copytree(hf_folder, tok)
    d = tmp_path_factory.mktemp("run")
    train_run(config_from_dict(raw(corpus, str(tok))), d, progress=False)
    return d, tok


# ----------------------------------------------------------------------------------------------- loading
def test_a_folder_and_its_tokenizer_json_load_as_one_tokenizer(hf_folder: Path, tmp_path: Path) -> None:
    folder, file = load_hf(hf_folder), load_hf(hf_folder / "tokenizer.json")
    vocab = folder.backend.get_vocab()
    assert folder.eos_id == vocab["</s>"] == file.eos_id and folder.vocab_size == 262 == file.vocab_size
    assert folder.identity == file.identity and len(folder.identity) == 64
    ids = folder.encode("the quick fox")
    assert ids.dtype == np.int64 and folder.eos_id not in ids and folder.decode(ids.tolist()) == "the quick fox"
    assert ids.tolist() == file.encode("the quick fox").tolist() and len(ids) < len("the quick fox")
    stored = stored_tokenizer(folder.save(tmp_path / "stored"))
    assert stored is not None and stored.identity == folder.identity and stored.kind == "hf"
    other = load_hf(save_folder(bpe(262, texts=["zebra quagga zebra"] * 3), tmp_path / "other"))
    assert other.identity != folder.identity


def test_eos_is_the_named_token_else_a_known_one_else_an_error(tmp_path: Path) -> None:
    named = load_hf(save_folder(bpe(262, special="<|endoftext|>"), tmp_path / "named", eos="<|endoftext|>"))
    assert named.eos_token == "<|endoftext|>"
    found = bpe(262, special="<|endoftext|>")
    found.save(str(tmp_path / "bare.json"))
    assert load_hf(tmp_path / "bare.json").eos_token == "<|endoftext|>"   # no config: a known EOS in the vocabulary
    bpe(262, special="[END]").save(str(tmp_path / "none.json"))
    with pytest.raises(UserError, match=r"none\.json has no end-of-document token.*</s>") as e:
        load_hf(tmp_path / "none.json")
    assert "\n" not in str(e.value)


def test_bad_tokenizers_are_one_line_errors_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "tokenizer.json").write_text("{not json")
    (bad / "tokenizer_config.json").write_text("{}")
    with pytest.raises(UserError, match=f"tokenizer folder {bad} does not load"):
        load_hf(bad)
    (tmp_path / "t.json").write_text('{"model": 3}')
    with pytest.raises(UserError, match="t.json does not load"):
        load_hf(tmp_path / "t.json")
    with pytest.raises(UserError, match="unknown tokenizer 'nope'"):
        tokenizer_source("nope")


def test_the_source_defaults_to_the_init_folders_tokenizer(hf_folder: Path, tmp_path: Path) -> None:
    assert tokenizer_source(None, str(hf_folder)) == TokenizerSource("hf", hf_folder)
    assert tokenizer_source("byte", str(hf_folder)) == TokenizerSource("byte")
    assert tokenizer_source(None, str(tmp_path)) == TokenizerSource("byte")     # a folder without a tokenizer
    assert tokenizer_source(None, None) == TokenizerSource("byte")


def test_byte_and_bpe_keep_their_ids(tmp_path: Path) -> None:
    """The built-in tokenizers through the new API: bytes are their own ids, EOS 256, BPE trained to the vocabulary."""
    byte = load_tokenizer(TokenizerSource("byte"), vocab_size=264)
    assert byte.encode("hé").tolist() == list("hé".encode()) and (byte.eos_id, byte.vocab_size) == (256, 257)
    trained = load_tokenizer(TokenizerSource("bpe"), vocab_size=270, documents=lambda: iter(SENTENCES))
    assert trained.vocab_size <= 270 and trained.eos_token == "<eos>"


# ----------------------------------------------------------------------------------------------- a run
def test_a_run_trains_with_the_hf_tokenizer_and_records_it(run: tuple[Path, Path], hf_folder: Path,
                                                           corpus: Path) -> None:
    d, _ = run
    tok = load_hf(hf_folder)
    want = np.concatenate([np.append(tok.encode(f.read_text()), tok.eos_id) for f in sorted(corpus.iterdir())])
    assert np.array_equal(np.fromfile(d / "data/tokens.bin", dtype=np.uint16), want)
    assert stored_tokenizer(d / "data").identity == tok.identity
    for stage in ("chain/01-lm_test-A", "chain/02-lm_test-B"):
        for name in ("final.pt", "last.pt"):
            if (d / stage / name).is_file():
                assert load_checkpoint(d / stage / name).lineage["tokenizer"]["sha256"] == tok.identity


def test_export_carries_the_tokenizer_for_transformers(run: tuple[Path, Path], hf_folder: Path,
                                                       tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d, _ = run
    assert main(["export", str(d), "--out", str(tmp_path / "x")]) == 0
    member = tmp_path / "x/chain/02-lm_test-B"
    model, auto = AutoModelForCausalLM.from_pretrained(member), AutoTokenizer.from_pretrained(member)
    ours = load_hf(hf_folder)
    text = "def f(x): return x"
    assert auto(text, add_special_tokens=False)["input_ids"] == ours.encode(text).tolist()
    assert auto.eos_token == "</s>" and auto.eos_token_id == ours.eos_id == model.config.eos_token_id
    assert model.config.vocab_size == 264


def test_a_run_refuses_a_tokenizer_replaced_since_it_started(run: tuple[Path, Path], hf_folder: Path, corpus: Path,
                                                             tmp_path: Path) -> None:
    d, tok = run
    cfg = config_from_dict(raw(corpus, str(tok)))
    work = tmp_path / "run"
    shutil.copytree(d, work)
    shutil.rmtree(tok)
    save_folder(bpe(262, texts=["other text entirely", "zebra zebra"]), tok)   # same path, another tokenizer
    try:
        with pytest.raises(UserError, match=r"this run .* was trained with another tokenizer") as e:
            train_run(cfg, work, baselines=True, progress=False)   # the baselines are new stages: data are built
        assert "\n" not in str(e.value) and not list((work / "baselines").rglob("*.pt"))
    finally:
        shutil.rmtree(tok)
        shutil.copytree(hf_folder, tok)


# ----------------------------------------------------------------------------------------------- init
def test_init_from_a_folder_uses_its_tokenizer_and_refuses_another(run: tuple[Path, Path], hf_folder: Path,
                                                                  corpus: Path, tmp_path: Path) -> None:
    d, _ = run
    folder = d / "chain/01-lm_test-A/hf"        # member 1 as Hugging Face files, with the run's tokenizer
    cfg = raw(corpus, None)
    cfg["chain"][0].update(init=str(folder))
    train_run(config_from_dict(cfg), tmp_path / "own", progress=False)
    want = load_hf(hf_folder).identity
    assert open_tokenizer(config_from_dict(cfg), tmp_path / "own").identity == want
    assert load_checkpoint(tmp_path / "own/chain/02-lm_test-B/final.pt").lineage["tokenizer"]["sha256"] == want
    for other, init in (("byte", str(folder)), ("byte", str(d / "chain/01-lm_test-A/final.pt"))):
        bad = copy.deepcopy(cfg)
        bad["data"]["tokenizer"] = other
        bad["chain"][0]["init"] = init
        with pytest.raises(UserError, match=f"init {init} was trained with another tokenizer") as e:
            train_run(config_from_dict(bad), tmp_path / f"bad-{Path(init).name}", progress=False)
        assert "\n" not in str(e.value)
        assert not list((tmp_path / f"bad-{Path(init).name}").rglob("final.pt"))


# ----------------------------------------------------------------------------------------------- grow and eval
def test_grow_keeps_the_parents_tokenizer_and_refuses_another(run: tuple[Path, Path], hf_folder: Path,
                                                              tmp_path: Path, capsys) -> None:
    from transformers import AutoTokenizer

    from compt.lm.models import create_lm, export_pretrained, get_lm_config

    d, _ = run
    parent = d / "chain/01-lm_test-A/final.pt"
    out = tmp_path / "child.pt"
    assert main(["grow", "--from", str(parent), "--to", "lm/test-B", "--op", "preserve", "--out", str(out)]) == 0
    ours = load_hf(hf_folder)
    assert load_checkpoint(out).lineage["tokenizer"]["sha256"] == ours.identity
    auto = AutoTokenizer.from_pretrained(tmp_path / "child-hf")
    assert auto("lazy dog", add_special_tokens=False)["input_ids"] == ours.encode("lazy dog").tolist()
    byte = load_tokenizer(TokenizerSource("byte"), vocab_size=264)
    child = export_pretrained(get_lm_config("lm/test-B"), create_lm("lm/test-B").state_dict(), tmp_path / "b-hf",
                              tokenizer=byte)
    capsys.readouterr()
    assert main(["grow", "--from", str(parent), "--to", str(child), "--op", "preserve",
                 "--out", str(tmp_path / "c.pt")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "was trained with another tokenizer" in err
    assert not (tmp_path / "c.pt").exists()


def test_eval_uses_the_checkpoints_tokenizer_and_refuses_another(run: tuple[Path, Path], corpus: Path,
                                                                 tmp_path: Path, capsys) -> None:
    d, _ = run
    ckpt = d / "chain/02-lm_test-B/final.pt"
    out = tmp_path / "e.json"
    assert main(["eval", str(ckpt), "--data", "text", "--data-path", str(corpus), "--eval-samples", "4",
                 "--json", str(out)]) == 0
    recorded = json.loads((d / "chain/02-lm_test-B/result.json").read_text())["history"][-1]["val_loss"]
    assert json.loads(out.read_text())["metrics"]["val_loss"] == pytest.approx(recorded, abs=1e-5)
    byte = load_tokenizer(TokenizerSource("byte"), vocab_size=264).save(tmp_path / "byte")
    capsys.readouterr()
    assert main(["eval", str(ckpt), "--data", "text", "--data-path", str(corpus), "--tokenizer", str(byte)]) == 2
    assert "was trained with another tokenizer" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- vocabulary, plan
def test_a_family_whose_vocabulary_is_smaller_than_the_tokenizer_is_resized(corpus: Path, tmp_path: Path) -> None:
    from compt.chain import member_config

    big = config_from_dict(raw(corpus, str(save_folder(bpe(300), tmp_path / "hf-300"))))
    validate(big)
    assert [member_config(big, i).vocab_size for i in (0, 1)] == [320, 320]   # 300 ids up to a multiple of 64
    fits = config_from_dict(raw(corpus, str(save_folder(bpe(264), tmp_path / "hf-264"))))  # as many ids: as it is
    assert [member_config(fits, i).vocab_size for i in (0, 1)] == [264, 264]


def test_ids_at_or_above_the_vocabulary_are_refused_naming_the_file() -> None:
    check_ids(np.array([0, 263]), 264, "shard.bin")
    with pytest.raises(UserError, match=r"shard.bin: token id 264 ≥ the model's vocabulary of 264"):
        check_ids(np.array([3, 264, 5]), 264, "shard.bin")


def test_plan_prints_tokens_per_parameter(corpus: Path, tmp_path: Path, capsys) -> None:
    """lm/test-A: 2 layers of d 16, 2 query heads and 1 KV head of dim 8, SwiGLU 32, tied vocabulary 264:
    per layer 16·16 + 2·16·8 + 16·16 + 3·16·32 + 2·16 = 2336, embedding 264·16 = 4224, final norm 16:
    P = 2·2336 + 4224 + 16 = 8912. Its stage: 1 epoch · 24 samples · 16 tokens = 384 tokens = 0.0431 per parameter;
    alone (baseline_epochs 1) the same."""
    from compt.lm.models import create_lm
    from compt.plan import plan_chain

    cfg = config_from_dict(raw(corpus, None))
    plan = plan_chain(cfg)
    a = plan.members[0]
    assert a.params == 8912 == sum(p.numel() for p in create_lm("lm/test-A").parameters())
    assert (a.tokens, a.individual_tokens) == (384, 384) and plan.sample_tokens == 16
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(raw(corpus, None) | {"chain": [{"model": "lm/test-A", "epochs": 3},
                                                                 raw(corpus, None)["chain"][1]]}))
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "24 samples of 16 tokens" in out and "caption" not in out
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if "tok/param" in line)
    row = lines[head + 2].split()        # 3 epochs · 24 samples · 16 tokens = 1152 tokens; alone 384
    assert row[1] == "lm/test-A" and row[2:7] == ["8.91", "k", "1.15", "k", "0.129"] and row[7:] == ["384", "0.0431"]
    assert "20 tokens per parameter (Chinchilla" in out
