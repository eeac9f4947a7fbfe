"""The Hugging Face BPE of the LM parity study (`benchmarks/experiments.py lm_parity`): ``benchmarks/data/pydoc-bpe2k``.

A byte-level BPE (the `tokenizers` library: GPT-2's byte alphabet, 2,048 ids including the end-of-document token
``<|endoftext|>``) fitted on the *training* files of the study's corpus, the reST sources of the Python 3.11
documentation (Debian's ``python3.11-doc``, ``/usr/share/doc/python3.11/html/_sources``), and saved with
``transformers.PreTrainedTokenizerFast(...).save_pretrained`` — the folder ``data.tokenizer`` names.

Which files are training. compt's text kind (`compt.lm.text.split`) joins the files in `compt.lm.text.text_files`
order, each followed by EOS, and cuts the token array at its end: the held-out split is the last
``eval_samples`` windows of ``context`` (+1) tokens, the validation split (a member that trains ``until``) the
``val_samples`` windows just before it, and training uses windows from the start. So the tokenizer must not see the
files that reach into the last ``(eval_samples + val_samples) · context + 2`` tokens. Those tokens are counted with
the tokenizer itself, so the script fits, tokenises every file, and refits without any file that reached into
them, until no fitted file does (each round fits on fewer files, so the loop ends; in practice after two). Every
file before the boundary is fitted on — more text than the training windows read (lm-base's 1,024 windows are the
corpus's first ≈ 400 KB), none of what is evaluated: 492 of the 497 files, all but whatsnew/3.7 … whatsnew/index.

Deterministic: the files in compt's order, one thread (``RAYON_NUM_THREADS=1``), no randomness in BPE training;
the script prints the tokenizer's sha256 (compt's identity, `compt.lm.tokenizers.identity_of`) to compare reruns.

    apt-get install python3.11-doc            # the study's corpus (not needed by make demo / make test)
    PYTHONPATH=src python benchmarks/make_tokenizer.py
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")       # the tokenizers library's thread pool: one, deterministic
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path("/usr/share/doc/python3.11/html/_sources")
OUT = ROOT / "benchmarks" / "data" / "pydoc-bpe2k"
VOCAB = 2048
EOS = "<|endoftext|>"
BASE = ROOT / "benchmarks" / "configs" / "lm-base.toml"


def reserved_tokens() -> int:
    """Tokens at the end of the corpus that lm-base's runs evaluate on: held-out plus validation windows."""
    import tomllib

    from compt.lm.models import get_lm_config

    data = tomllib.loads(BASE.read_text())["data"]
    windows = data["eval_samples"] + data.get("val_samples", data["eval_samples"])
    return windows * get_lm_config("lm/cpu-1M").context_length + 2


def fit(texts: list[str]):
    """A byte-level BPE of `VOCAB` ids (256 bytes, `EOS`, merges) fitted on `texts`."""
    from compt.lm.tokenizers import train_bpe

    return train_bpe(texts, VOCAB, eos=EOS)


def training_files(texts: list[str], reserve: int) -> tuple[int, object]:
    """(how many leading files are fitted on, the tokenizer fitted on them): the fixed point of the module
    docstring."""
    fitted = len(texts)
    while True:
        tok = fit(texts[:fitted])
        ends, total = [], 0
        for text in texts:
            total += len(tok.encode(text, add_special_tokens=False).ids) + 1   # + EOS
            ends.append(total)
        boundary = total - reserve
        clear = sum(1 for end in ends if end <= boundary)    # leading files wholly before the boundary
        if fitted <= clear:
            return fitted, tok
        fitted = clear


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, default=CORPUS)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    from transformers import PreTrainedTokenizerFast

    from compt.lm.text import read_document, text_files
    from compt.lm.tokenizers import identity_of

    if not args.corpus.is_dir():
        raise SystemExit(f"{args.corpus}: no such folder (apt-get install python3.11-doc)")
    files = text_files(args.corpus)
    texts = [read_document(f) for f in files]
    fitted, tok = training_files(texts, reserved_tokens())
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS).save_pretrained(args.out)
    size = sum(len(t.encode()) for t in texts[:fitted])
    print(f"fitted on {fitted} of {len(files)} files ({size / 1e6:.1f} MB; {files[0].relative_to(args.corpus)} … "
          f"{files[fitted - 1].relative_to(args.corpus)}); held out from fitting: "
          f"{files[fitted].relative_to(args.corpus)} … {files[-1].relative_to(args.corpus)}")
    print(f"{tok.get_vocab_size()} ids, EOS {EOS} = {tok.token_to_id(EOS)}; sha256 {identity_of(tok)}; {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
