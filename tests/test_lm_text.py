"""Text data for language models: tokenisers, the memory-mapped token array, the split and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from compt.errors import UserError
from compt.lm.text import default_corpus, split, text_files, tokenize_corpus
from compt.lm.tokenizers import EOS, TokenizerSource, byte_tokenizer, load_tokenizer


def corpus(tmp_path, texts: dict[str, bytes]):
    root = tmp_path / "corpus"
    for name, data in texts.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_byte_tokenizer_ids_are_the_utf8_bytes():
    tok = byte_tokenizer()
    text = "héllo wörld\n\tdef f(): return 1  # ünïcode ✓"
    assert tok.encode(text).ids == list(text.encode())
    assert tok.decode(list(text.encode())) == text
    assert tok.token_to_id(EOS) == 256 and tok.get_vocab_size() == 257


def test_tokenize_once_then_reuse(tmp_path):
    root = corpus(tmp_path, {"a.txt": b"first doc", "sub/b.rst.txt": "second ✓".encode()})
    c = tokenize_corpus(root, tmp_path / "tok")
    want = list(b"first doc") + [256] + list("second ✓".encode()) + [256]
    assert c.tokens.tolist() == want and c.tokens.dtype == np.uint16
    mtime = (tmp_path / "tok" / "tokens.bin").stat().st_mtime_ns
    again = tokenize_corpus(root, tmp_path / "tok")
    assert again.tokens.tolist() == want and (tmp_path / "tok" / "tokens.bin").stat().st_mtime_ns == mtime


def test_bpe_tokenizer_fits_the_vocabulary_and_roundtrips(tmp_path):
    text = ("the quick brown fox jumps over the lazy dog. " * 40).encode()
    tok = load_tokenizer(TokenizerSource("bpe"), vocab_size=300, documents=lambda: iter([text.decode()]))
    c = tokenize_corpus(corpus(tmp_path, {"a.txt": text}), tmp_path / "tok", tokenizer=tok, vocab_size=300)
    assert c.vocab_size <= 300 and c.tokens.size < len(text) / 2 and c.tokens[-1] == tok.eos_id
    assert tok.decode(c.tokens[:-1].tolist()) == text.decode()


def test_split_windows(tmp_path):
    c = tokenize_corpus(corpus(tmp_path, {"a.txt": bytes(range(97, 123)) * 10}), tmp_path / "tok")
    train, held = split(c, context=8, eval_windows=6)
    assert c.tokens.size == 261 and len(held) == 6 and len(train) == (212 - 1) // 8   # held: the last 6·8 + 1
    x, i = train[2]
    assert x.shape == (9,) and i == 2 and x.tolist() == c.tokens[16:25].tolist()
    assert held[0][0].tolist() == c.tokens[212:221].tolist() and held[5][0].tolist() == c.tokens[252:261].tolist()
    with pytest.raises(UserError, match="too few"):
        split(c, context=8, eval_windows=32)


@pytest.mark.parametrize("texts,match", [({"a.txt": b"ok", "b.txt": b"  \n"}, "b.txt is empty"),
                                         ({"a.txt": b"ok \xff\xfe bad"}, "a.txt is not UTF-8")])
def test_bad_files_are_named(tmp_path, texts, match):
    with pytest.raises(UserError, match=match):
        tokenize_corpus(corpus(tmp_path, texts), tmp_path / "tok")


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(UserError, match="not found"):
        text_files(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no files"):
        text_files(tmp_path / "empty")


def test_default_corpus_is_the_standard_library_sorted_and_bounded(tmp_path, monkeypatch):
    """No Debian package needed (none looked for): the stdlib's public top-level modules by name, up to the byte
    budget."""
    import sysconfig
    from pathlib import Path

    import compt.lm.text as text

    root = Path(sysconfig.get_paths()["stdlib"])
    files = text_files(default_corpus())
    sizes = [f.stat().st_size for f in files]
    assert len(files) >= 10 and all(f.parent == root and not f.name.startswith("_") for f in files)
    assert files == sorted(files) and min(sizes) > 0 and sum(sizes) <= text.DEFAULT_CORPUS_BYTES
    public = sorted(f for f in root.glob("*.py") if not f.name.startswith("_"))
    assert files == public[:len(files)]                        # a prefix: the next module would not fit
    assert sum(sizes) + public[len(files)].stat().st_size > text.DEFAULT_CORPUS_BYTES
    assert default_corpus() == default_corpus() and "the Python standard library" in str(default_corpus())
    tokens = tokenize_corpus(default_corpus(), tmp_path / "tok").tokens
    assert tokens.size == sum(sizes) + len(files)              # byte-level: one token a byte, one <eos> a file
    monkeypatch.setattr(text, "DEFAULT_CORPUS_BYTES", 0)
    with pytest.raises(UserError, match="no Python standard-library sources in .*; set data.path"):
        default_corpus()


@pytest.mark.parametrize("config", ["demo-lm", "demo-lm-quick"])
def test_lm_demo_configs_fit_in_the_default_corpus(config, tmp_path):
    from compt.commands.demo import demo_config_path
    from compt.config import load_config
    from compt.lm.models import get_lm_config

    cfg = load_config(demo_config_path(config.endswith("quick"), lm=True))
    assert cfg.data.path == ""
    context = get_lm_config(cfg.chain[0].model).context_length
    train, held = split(tokenize_corpus(default_corpus(), tmp_path / "tok"), context, cfg.data.eval_samples,
                        max_train=cfg.data.num_samples)
    assert (len(train), len(held)) == (cfg.data.num_samples, cfg.data.eval_samples)
