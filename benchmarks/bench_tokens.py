"""Is the token-shard loader as fast as reading the windows with numpy.memmap by hand?

Writes a flat uint16 token corpus (`--shards` files, `--tokens` ids in all, with ``tokens.json``) in a temporary
folder and reads the same training windows (context `--context` + 1 ids, global batches of `--batch` windows in
the trainer's seeded order) three ways, one after the other in each of `--rounds` rounds:

- **compt**: what a ``data.kind = "tokens"`` run trains on — `compt.lm.shards.open_shards` and `window_split`
  (held-out windows cut out by hash), `SegmentWindows`, read by the trainer's DataLoader
  (`compt.train.loader.train_loader`, `StepBatchSampler`, no worker processes);
- **numpy.memmap**, two plain readers walking the same sampler, with one ``np.memmap`` per shard and every
  window's (shard, offset) listed up front: nanoGPT's ``get_batch``
  (``torch.stack([torch.from_numpy(mm[a:a + context + 1].astype(np.int64)) …])``) and a copy of each window into
  one preallocated int64 array.

All give identical batches (checked). Time is CPU time of this single-threaded process (on a shared machine wall
time also measures the other jobs). Reports tokens per CPU second (the fastest round) and the ratio compt / the
faster plain reader, taken within each round and then the median over rounds (paired, so a slow spell of the
machine hits both sides).

    python benchmarks/bench_tokens.py            # writes benchmarks/results/tokens.md
    python benchmarks/bench_tokens.py --quick    # smaller, no file written
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compt.distributed import DistInfo
from compt.lm.shards import SegmentWindows, open_shards, window_split
from compt.train.loader import train_loader
from compt.train.sampler import StepBatchSampler

OUT = Path(__file__).parent / "results" / "tokens.md"


def write_corpus(folder: Path, tokens: int, shards: int, vocab: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(shards):
        rng.integers(0, vocab, size=tokens // shards, dtype=np.uint16).tofile(folder / f"train-{i:03d}.bin")
    (folder / "tokens.json").write_text(json.dumps({"dtype": "uint16", "vocab_size": vocab, "eos_id": vocab - 1}))


def compt_reader(folder: Path, context: int, batch: int, steps: int, vocab: int):
    """(dataset, read()): the run's training windows through the trainer's loader."""
    shards = open_shards(folder, model_vocab=vocab, tokenizer_vocab=vocab, eos_id=vocab - 1)
    train_segments, _ = window_split(shards, context, [64], seed=0)
    ds = SegmentWindows(shards, train_segments, context)
    sampler = StepBatchSampler(len(ds), batch_size=batch, accum=1, seed=0, start=0, stop=steps)
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    loader = train_loader(ds, sampler, workers=0, info=info)
    return ds, sampler, lambda: (tokens for tokens, _ in loader)


def memmap_readers(ds: SegmentWindows, sampler: StepBatchSampler, context: int) -> dict[str, Callable]:
    """{name: read()}: the same windows in the same order (the trainer's sampler), sliced from plain np.memmap
    arrays; each window's (shard, offset) listed up front in one array, as a reader of flat files computes it."""
    maps = [np.memmap(s.path, dtype=np.uint16, mode="r") for s in ds.sources]
    where = np.array([ds.window(i) for i in range(len(ds))], dtype=np.int64)   # (windows, 2)

    def get_batch() -> Iterator[torch.Tensor]:
        for idx in sampler:
            yield torch.stack([torch.from_numpy(maps[s][a:a + context + 1].astype(np.int64))
                               for s, a in where[idx].tolist()])

    def copy_into() -> Iterator[torch.Tensor]:
        for idx in sampler:
            x = np.empty((len(idx), context + 1), dtype=np.int64)
            for row, (s, a) in enumerate(where[idx].tolist()):
                x[row] = maps[s][a:a + context + 1]
            yield torch.from_numpy(x)

    return {"memmap, nanoGPT get_batch": get_batch, "memmap, copy into one array": copy_into}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_corpus(folder, args.tokens, args.shards, args.vocab)
        start = time.perf_counter()
        ds, sampler, compt_read = compt_reader(folder, args.context, args.batch, args.steps, args.vocab)
        open_s = time.perf_counter() - start
        readers = {"compt": compt_read, **memmap_readers(ds, sampler, args.context)}
        want = list(compt_read())   # also warms the page cache
        for read in readers.values():
            got = list(read())
            assert len(got) == args.steps and all(torch.equal(x, y) for x, y in zip(want, got))
        del want, got
        times: dict[str, list[float]] = {name: [] for name in readers}
        for _ in range(args.rounds):
            for name, read in readers.items():
                t = time.process_time()
                for _batch in read():   # each batch is dropped as a training step would
                    pass
                times[name].append(time.process_time() - t)
    per_pass = args.steps * args.batch * (args.context + 1)
    speed = {name: per_pass / min(ts) for name, ts in times.items()}
    paired = [min(ts[r] for k, ts in times.items() if k != "compt") / times["compt"][r] for r in range(args.rounds)]
    return {"speed": speed, "ratio": statistics.median(paired), "rounds": paired, "open_s": open_s,
            "windows": len(ds)}


def markdown(args: argparse.Namespace, r: dict[str, Any], command: str) -> str:
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs (shared), Python {platform.python_version()}, " \
              f"numpy {np.__version__}, torch {torch.__version__}, 1 torch thread"
    verdict = "within 10 %" if r["ratio"] >= 0.9 else "NOT within 10 %"
    rows = "".join(f"| {name} | {v:,.0f} |\n" for name, v in r["speed"].items())
    return (f"# Token-shard loader vs plain numpy.memmap\n\nCommand: `{command}`\n\nMachine: {machine}.\n\n"
            f"Corpus: {args.tokens:,} uint16 ids in {args.shards} files (page cache warm), {r['windows']:,} training "
            f"windows of {args.context} + 1 ids; {args.steps} global batches of {args.batch} windows in the trainer's "
            f"order, {args.rounds} rounds (each reader once per round); time = CPU time of this single-threaded "
            f"process (the machine is shared: wall time would also time its other jobs), tokens/s of the fastest "
            f"round; every reader's batches checked identical. Opening the corpus (sizes, samples, hash split) "
            f"took {r['open_s']:.3f} s.\n\n"
            f"| reader | tokens per CPU second |\n|---|---:|\n{rows}\n"
            f"compt / the faster plain reader, within each round, median over rounds = **{r['ratio']:.3f}** "
            f"({verdict}; the rounds: {', '.join(f'{x:.2f}' for x in r['rounds'])}).\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=32_000_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--vocab", type=int, default=50_304)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.tokens, args.steps, args.rounds = 2_000_000, 20, 2
    torch.set_num_threads(1)
    r = measure(args)
    command = " ".join(["python", "benchmarks/bench_tokens.py", *sys.argv[1:]])
    text = markdown(args, r, command)
    print(text)
    if not args.quick:
        OUT.write_text(text)
        print(f"written: {OUT}")


if __name__ == "__main__":
    main()
