"""Is the memoised public-API tokenizer fast enough? `compt.clip.tokenizer.tokenize` vs plain ``open_clip.tokenize``.

Tokenises the synthetic corpus's captions (K = 7 slots per image: many repeated words and captions) and a
corpus of distinct captions (the same captions with a unique number each), at context 77, with
- ``open_clip.tokenize`` (public, no cache),
- `compt.clip.tokenizer.CachedTokenizer`, cold (fresh caches) and warm (second pass),
checks that all give identical ids, and reports captions/s.

    python benchmarks/bench_tokenizer.py            # writes benchmarks/results/tokenizer.md
    python benchmarks/bench_tokenizer.py --quick    # smaller corpus, no file written
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import open_clip
import torch

from compt.clip.data import synthetic
from compt.clip.tokenizer import CachedTokenizer

CTX = 77


def corpora(images: int) -> dict[str, list[str]]:
    scenes = synthetic.sample_scenes(0, 0, images)
    captions = [c for caps in synthetic.captions_for(scenes, 7, seed=0, split=0) for c in caps]
    return {"synthetic (repeated words)": captions,
            "distinct captions": [f"{c} number {i}" for i, c in enumerate(captions)]}


def timed(fn, texts: list[str]) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = fn(texts)
    return time.perf_counter() - start, out


def measure(texts: list[str]) -> dict[str, float]:
    plain_s, ref = timed(lambda t: open_clip.tokenize(t, context_length=CTX), texts)
    tok = CachedTokenizer()
    cold_s, cold = timed(lambda t: tok(t, CTX), texts)
    warm_s, warm = timed(lambda t: tok(t, CTX), texts)
    assert torch.equal(cold, ref) and torch.equal(warm, ref), "memoised tokenizer differs from open_clip"
    return {"n": len(texts), "plain": len(texts) / plain_s, "cold": len(texts) / cold_s, "warm": len(texts) / warm_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = {name: measure(texts) for name, texts in corpora(200 if args.quick else 2000).items()}
    lines = ["| corpus | captions | open_clip.tokenize (captions/s) | memoised, cold | memoised, warm "
             "| cold speed-up |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['n']:,} | {r['plain']:,.0f} | {r['cold']:,.0f} | {r['warm']:,.0f} | "
                     f"{r['cold'] / r['plain']:.1f}× |")
    table = "\n".join(lines)
    print(table)
    if not args.quick:
        out = Path(__file__).parent / "results" / "tokenizer.md"
        out.write_text(f"# Tokenizer: memoised public API vs plain open_clip\n\nBenchmark: "
                       f"`benchmarks/bench_tokenizer.py` (context {CTX}; ids checked identical to "
                       f"`open_clip.tokenize`). Machine: {platform.machine()}, 1 thread, open_clip "
                       f"{open_clip.__version__}; a shared 2-core machine, so compare within a row, not across runs."
                       f"\n\n{table}\n")
        print(f"written: {out}")


if __name__ == "__main__":
    main()
