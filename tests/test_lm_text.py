"""Text data for language models: tokenisers, the memory-mapped token array, the split and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from compt.errors import UserError
from compt.lm.text import EOS, byte_tokenizer, default_corpus, split, text_files, tokenize_corpus


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
    assert c.tokens.tolist() == want and c.tokens.dtype == np.uint16 and c.tokenizer_file.is_file()
    mtime = (tmp_path / "tok" / "tokens.bin").stat().st_mtime_ns
    again = tokenize_corpus(root, tmp_path / "tok")
    assert again.tokens.tolist() == want and (tmp_path / "tok" / "tokens.bin").stat().st_mtime_ns == mtime


def test_bpe_tokenizer_fits_the_vocabulary_and_roundtrips(tmp_path):
    from tokenizers import Tokenizer

    text = ("the quick brown fox jumps over the lazy dog. " * 40).encode()
    c = tokenize_corpus(corpus(tmp_path, {"a.txt": text}), tmp_path / "tok", tokenizer="bpe", vocab_size=300)
    tok = Tokenizer.from_file(str(c.tokenizer_file))
    assert c.vocab_size <= 300 and c.tokens.size < len(text) / 2
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


def test_default_corpus_is_the_first_present_folder_or_names_the_apt_package(tmp_path, monkeypatch):
    """No Debian package needed: the corpus locations are replaced by generated folders."""
    import compt.lm.text as text

    present = tmp_path / "docs"
    present.mkdir()
    for i in range(12):
        (present / f"{i}.txt").write_text(f"generated text number {i}\n" * 3)
    monkeypatch.setattr(text, "CORPORA", (tmp_path / "missing", present))
    assert default_corpus() == present and len(text_files(present)) == 12
    monkeypatch.setattr(text, "CORPORA", (tmp_path / "missing",))
    with pytest.raises(UserError, match="apt-get install python3.11-doc"):
        default_corpus()
