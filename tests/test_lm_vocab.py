"""A Hugging Face tokenizer with more ids than a family's registered vocabulary resizes every member's vocabulary
(rounded up to a multiple of 64), resolved once and seen alike by training, checkpoints, `compt plan`, `compt eval`,
`compt export` and `compt grow`; an init whose vocabulary is too small is refused. The tokenizer (330 ids: 264
would be refused before, 320 is the nearest multiple of 64, 384 the one above) is trained here, nothing is
downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomli_w
from test_lm_tokenizers import bpe, raw, save_folder

from compt.chain import member_config, train_run
from compt.checkpoint import load_checkpoint
from compt.cli import main
from compt.config import config_from_dict
from compt.errors import UserError
from compt.lm.models import create_lm, fit_vocab, get_lm_config
from compt.lm.tokenizers import load_hf

IDS, RESIZED = 330, 384


@pytest.fixture(scope="module")
def tok330(tmp_path_factory) -> Path:
    return save_folder(bpe(IDS), tmp_path_factory.mktemp("tok") / "hf-330")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from test_lm_chain import TEXT

    root = tmp_path_factory.mktemp("text")
    (root / "a.txt").write_text(TEXT)
    return root


@pytest.fixture(scope="module")
def resized_run(tmp_path_factory, tok330: Path, corpus: Path) -> tuple[Path, str]:
    """(run dir, what the run said on stderr) of a 2-member lm-test run with the 330-id tokenizer."""
    import contextlib
    import io

    d = tmp_path_factory.mktemp("run")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        train_run(config_from_dict(raw(corpus, str(tok330))), d, progress=False)
    return d, err.getvalue()


def test_fit_vocab_rounds_up_to_a_multiple_of_64_and_never_shrinks() -> None:
    a = get_lm_config("lm/test-A")
    assert fit_vocab(a, 264) is a and fit_vocab(a, 100) is a
    assert [fit_vocab(a, n).vocab_size for n in (265, 320, 321, IDS)] == [320, 320, 384, RESIZED]
    assert fit_vocab(a, IDS).hidden == a.hidden and fit_vocab(a, IDS).name == a.name


def test_every_consumer_sees_the_resized_config(resized_run: tuple[Path, str], tok330: Path, corpus: Path) -> None:
    d, err = resized_run
    said = [line for line in err.splitlines() if "resized" in line]
    assert said == [f"compt: tokenizer {tok330} has 330 token ids, more than the members' vocab_size 264: every "
                    f"member's vocabulary is resized to 384 (the ids rounded up to a multiple of 64)"]
    cfg = config_from_dict(raw(corpus, str(tok330)))
    assert [member_config(cfg, i).vocab_size for i in (0, 1)] == [RESIZED, RESIZED]
    for stage in ("chain/01-lm_test-A", "chain/02-lm_test-B"):
        ckpt = load_checkpoint(d / stage / "final.pt")
        assert ckpt.model_config.vocab_size == RESIZED
        assert ckpt.state_dict["model.embed_tokens.weight"].shape[0] == RESIZED
        assert json.loads((d / stage / "hf/config.json").read_text())["vocab_size"] == RESIZED


def test_eval_and_export_load_the_resized_members(resized_run: tuple[Path, str], tok330: Path, corpus: Path,
                                                  tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d, _ = resized_run
    out = tmp_path / "e.json"
    assert main(["eval", str(d / "chain/02-lm_test-B/final.pt"), "--data", "text", "--data-path", str(corpus),
                 "--eval-samples", "4", "--json", str(out)]) == 0
    recorded = json.loads((d / "chain/02-lm_test-B/result.json").read_text())["history"][-1]["val_loss"]
    assert json.loads(out.read_text())["metrics"]["val_loss"] == pytest.approx(recorded, abs=1e-5)
    assert main(["export", str(d), "--out", str(tmp_path / "x")]) == 0
    member = tmp_path / "x/chain/02-lm_test-B"
    model, auto = AutoModelForCausalLM.from_pretrained(member), AutoTokenizer.from_pretrained(member)
    assert model.config.vocab_size == RESIZED and len(auto) == IDS
    ids = auto("the lazy dog", return_tensors="pt")["input_ids"]
    assert model(input_ids=ids).logits.shape[-1] == RESIZED
    ours = create_lm(load_checkpoint(d / "chain/02-lm_test-B/final.pt").model_config,
                     state_dict=load_checkpoint(d / "chain/02-lm_test-B/final.pt").state_dict).eval()
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, ours(input_ids=ids).logits, atol=1e-5)


def test_grow_to_a_registered_model_keeps_the_parents_vocabulary(resized_run: tuple[Path, str],
                                                                 tmp_path: Path, capsys) -> None:
    d, _ = resized_run
    out = tmp_path / "c.pt"
    assert main(["grow", "--from", str(d / "chain/01-lm_test-A/final.pt"), "--to", "lm/test-C", "--op",
                 "preserve", "--out", str(out)]) == 0
    assert load_checkpoint(out).model_config.vocab_size == RESIZED
    assert "(function-preserving)" in capsys.readouterr().out


def test_plan_prices_the_resized_members(tok330: Path, corpus: Path, tmp_path: Path, capsys) -> None:
    """lm/test-A (d 16, 2 layers, 2 query heads and 1 KV head of dim 8, SwiGLU 32, T 16) with vocabulary 384:
    per layer 2·16·16 + 2·16·8 + 3·16·32 = 2304 matmul weights, N_mm = 2·2304 + 16·384 = 10752, P = N_mm + 5·16
    norms = 10832 (tied); forward = 2·(10752·16 + 2·16²·2·8·2) = 376832 FLOPs per sequence; 1 epoch of 24 samples
    alone costs 3·376832·24 = 27131904 FLOPs on 384 tokens, 0.0355 per parameter."""
    from compt.plan import plan_chain

    plan = plan_chain(config_from_dict(raw(corpus, str(tok330))))
    a = plan.members[0]
    assert a.params == 10832 == sum(p.numel() for p in create_lm(fit_vocab(get_lm_config("lm/test-A"), IDS))
                                    .parameters())
    assert a.forward_flops == 376832 and a.individual_cost == 27131904 and a.individual_tokens == 384
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(raw(corpus, str(tok330))))
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.count("every member's vocabulary is resized to 384") == 1
    row = next(line for line in out.splitlines() if line.split()[1:2] == ["lm/test-A"] and "k" in line.split())
    assert row.split()[2:4] == ["10.8", "k"] and row.split()[-1] == "0.0355"


def test_an_init_whose_vocabulary_is_too_small_is_refused(tok330: Path, corpus: Path, tmp_path: Path) -> None:
    from compt.lm.models import export_pretrained

    small = export_pretrained(get_lm_config("lm/test-A"), create_lm("lm/test-A").state_dict(), tmp_path / "hf",
                              tokenizer=load_hf(tok330))   # a 264-vocabulary model with the 330-id tokenizer
    cfg = raw(corpus, None)
    cfg["chain"][0]["init"] = str(small)
    with pytest.raises(UserError, match=r"init .*hf is not a lm/test-A: vocab_size 264 \(the member has 384\) "
                                        r"\(its vocabulary of 264 is resized to 384") as e:
        train_run(config_from_dict(cfg), tmp_path / "r", progress=False)
    assert "\n" not in str(e.value) and not list((tmp_path / "r").rglob("*.pt"))


def test_lm_eval_on_the_resized_members_equals_their_held_out_loss(resized_run: tuple[Path, str]) -> None:
    """lm-evaluation-harness loads each exported member (vocabulary 384, the run's BPE) and its ``held-out`` task
    gives bits per byte = N·L / (B ln 2) with L the member's recorded held-out loss (`compt.lm.harness`)."""
    import math
    import os

    pytest.importorskip("lm_eval")
    from compt.lm.harness import OFFLINE

    d, _ = resized_run
    with pytest.MonkeyPatch.context() as mp:   # the offline switches compt sets are undone afterwards
        for key in OFFLINE:
            mp.setenv(key, os.environ.get(key, "1"))
        assert main(["eval", str(d), "--lm-eval", "held-out", "--batch-size", "4"]) == 0
    held = json.loads((d / "lm_eval/held-out/held_out.json").read_text())
    assert held["same_tokens"] and held["tokens"] == 4 * 16
    for member in ("chain/01-lm_test-A", "chain/02-lm_test-B"):
        loss = json.loads((d / member / "result.json").read_text())["metrics"]["val_loss"]
        got = json.loads((d / "lm_eval" / member / "results.json").read_text())["results"]["held-out"]
        assert got["bits_per_byte,none"] == pytest.approx(held["tokens"] * loss / (held["bytes"] * math.log(2)),
                                                          rel=1e-5)


def test_the_run_configs_are_resolved_once_per_run_config(tok330: Path, corpus: Path, monkeypatch) -> None:
    from compt.lm.paradigm import LMParadigm
    from compt.paradigm import chain_rules

    calls = []
    resolve = LMParadigm.run_configs
    monkeypatch.setattr(LMParadigm, "run_configs", lambda self, cfg: calls.append(cfg) or resolve(self, cfg))
    cfg = config_from_dict(raw(corpus, str(tok330)))
    assert member_config(cfg, 0) is member_config(cfg, 0) is chain_rules(cfg).configs[0] and len(calls) == 1
    member_config(config_from_dict(raw(corpus, str(tok330))), 1)   # another run config: resolved for itself
    assert len(calls) == 2
