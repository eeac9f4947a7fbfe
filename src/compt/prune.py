"""Pruning down (``growth = "prune"``): the paradigm-free half of cutting a smaller member out of a trained one.

A pruned member starts from its predecessor's final weights restricted to the predecessor's most important
units (Minitron: Muralidharan et al. 2024, Sreenivas et al. 2024), measured once, without gradients, on a
calibration batch of the run's training data: `calibration_batch` draws `CALIBRATION_SAMPLES` samples (at most
the set's size) by the stage's seed, so the result is deterministic for a seed and a data set. The paradigms
measure (`compt.clip.prune`, `compt.lm.prune`, by forward hooks); this module holds what they share::

    mean over the batch and tokens      m(z)_j = (1 / (B·T)) Σ_{b,t} z_{b,t,j}
    keep(s, k)                          the k indices of the largest scores s, in ascending order (a tie goes
                                        to the lower index: a stable sort)
    block importance                    BI_l = 1 − m(cos(x_l, y_l))  with x_l a block's input and y_l its
                                        output at each token (Men et al. 2024, "ShortGPT"); a block that
                                        leaves the stream unchanged scores 0 and is dropped first

Depth keeps the L' blocks of the largest BI_l in their order; width is measured on the full predecessor (one
shot: no re-measuring after depth is cut). A chain may mix pruned and grown members (each step is checked by
its own rule: a pruned member is no larger than its predecessor in every dimension and cheaper, any other member
larger, `compt.config.validate`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, IterableDataset, default_collate

Tensor = torch.Tensor
CALIBRATION_SAMPLES = 1024   # Minitron's calibration set size
CHUNK = 64                   # samples per calibration forward (bounds the activations held at once)


def calibration_batch(dataset: Dataset, seed: int, samples: int = CALIBRATION_SAMPLES) -> list[Tensor]:
    """`samples` training samples (at most the set's size) collated into one batch (the format the paradigm's
    `forward` takes): drawn without replacement by `seed` from a map-style set, the first ones of a stream; any
    random transform the set applies draws from torch's RNG seeded by `seed` (the global stream is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if isinstance(dataset, IterableDataset):
            items = list(itertools.islice(iter(dataset), samples))
        else:
            order = torch.randperm(len(dataset))[:samples]
            items = [dataset[int(i)] for i in order]
    return list(default_collate(items))


def chunks(batch: Sequence[Tensor], size: int = CHUNK) -> Iterator[list[Tensor]]:
    """The batch in slices of `size` samples along dimension 0."""
    for start in range(0, len(batch[0]), size):
        yield [t[start:start + size] for t in batch]


def keep(scores: Tensor, k: int) -> Tensor:
    """The indices of the `k` largest `scores`, ascending (ties: the lower index first)."""
    assert 0 < k <= scores.numel(), (k, scores.numel())
    order = torch.sort(scores.double(), descending=True, stable=True).indices[:k]
    return torch.sort(order).values


class Means:
    """Running per-key sums and counts of importance statistics: ``add(key, total, n)``, then ``mean(key)``."""

    def __init__(self) -> None:
        self.total: dict[str, Tensor] = {}
        self.count: dict[str, int] = {}

    def add(self, key: str, total: Tensor, n: int) -> None:
        total = total.detach().double().cpu()
        self.total[key] = self.total[key] + total if key in self.total else total
        self.count[key] = self.count.get(key, 0) + n

    def mean(self, key: str) -> Tensor:
        return self.total[key] / self.count[key]

    def add_abs(self, key: str, z: Tensor) -> None:
        """m(|z|) per channel of the last dimension, over every other dimension."""
        flat = z.reshape(-1, z.shape[-1])
        self.add(key, flat.abs().sum(0), flat.shape[0])

    def add_block(self, key: str, x: Tensor, y: Tensor) -> None:
        """BI = 1 − m(cos(x, y)) over every token of a block's input `x` and output `y` (…, d)."""
        cos = torch.nn.functional.cosine_similarity(x.double(), y.double(), dim=-1)
        self.add(key, (1 - cos).sum(), cos.numel())


def block_input(args: tuple[Any, ...], kwargs: dict[str, Any], name: str = "hidden_states") -> Tensor:
    """A block's stream input, passed positionally or as keyword `name`."""
    return args[0] if args else kwargs[name]


def block_output(out: Any) -> Tensor:
    """A block's stream output (the first element when the block returns a tuple)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def remove(handles: list[Any]) -> None:
    """Remove forward hooks (in a ``finally``: a failed calibration leaves the model unhooked)."""
    for h in handles:
        h.remove()


def as_lists(tree: Any) -> Any:
    """Tensors in a nested dict/list → JSON-ready lists (floats to 6 significant digits, indices as ints)."""
    if isinstance(tree, Tensor):
        return _rounded(tree.tolist()) if tree.is_floating_point() else tree.tolist()
    if isinstance(tree, dict):
        return {k: as_lists(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [as_lists(v) for v in tree]
    return tree


def _rounded(x: Any) -> Any:
    return [_rounded(v) for v in x] if isinstance(x, list) else float(f"{x:.6g}")
