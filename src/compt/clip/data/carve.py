"""The validation split carved out of a training source by a hash of each sample's key, for runs whose grown
members train until a target (`compt.train.stopping`): every rank, every resume and a webdataset stream agree on
it without sharing a list of samples.

    rank(key) = the first 8 bytes of sha256("<seed>/<key>"), big-endian         ∈ [0, 2⁶⁴)

An indexed source (CSV, indexed shards, an image folder, the real sets) first holds out its evaluation split as it
does without a validation split; the validation split is then the V samples of lowest rank among the n left,

    V = min(val_samples, ⌊n / 5⌋)            (val_samples unset: eval_samples)

and training reads the other n − V. A stream (``wds-stream``) cannot rank samples it has not read: it skips every
sample of rank below B = ⌊2⁶⁴ · V / N⌋ (N = num_samples, its pass; V = min(val_samples, ⌊N / 5⌋)) — about V
samples a pass — and its validation split is the samples of lowest rank below B in ``data.path``'s shards (at
most V). Keys: a CSV row's ``filepath`` as written, a shard sample's webdataset ``__key__``, an image's path below
its folder, a Fashion-MNIST image's index in its training file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from compt.clip.settings import ClipDataConfig
from compt.errors import UserError

MIN_SAMPLES = 5        # a smaller validation split decides stopping on noise
SPACE = 1 << 64        # ranks lie in [0, SPACE)


def key_rank(key: str, seed: int) -> int:
    """rank(key) of the module docstring."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{key}".encode()).digest()[:8], "big")


def wanted(data: ClipDataConfig) -> int:
    """The validation samples asked for: ``data.val_samples``, else ``data.eval_samples``."""
    return data.val_samples if data.val_samples is not None else data.eval_samples


def lowest(keys: Sequence[str], count: int, seed: int) -> list[int]:
    """Positions in `keys` of the `count` keys of lowest rank (ties by position), ascending."""
    order = sorted(range(len(keys)), key=lambda i: (key_rank(keys[i], seed), i))
    return sorted(order[:count])


def check(count: int, source: str) -> None:
    """A validation split of fewer than `MIN_SAMPLES` samples is a one-line `UserError` naming `source`."""
    if count < MIN_SAMPLES:
        raise UserError(f"{source}: too few samples for a validation split (until/target stopping needs at least "
                        f"{MIN_SAMPLES}, this data gives {count}): add data, set data.val_path, or set the grown "
                        f"members' epochs instead")


def carve(keys: Sequence[str], data: ClipDataConfig, source: str) -> list[int]:
    """Positions of the validation split among the samples `keys` left after the held-out split (ascending)."""
    count = min(wanted(data), len(keys) // 5)
    check(count, source)
    return lowest(keys, count, data.seed)


def stream_bound(data: ClipDataConfig) -> int:
    """B of the module docstring: a stream skips the samples of rank below it."""
    return SPACE * min(wanted(data), data.num_samples // 5) // data.num_samples
