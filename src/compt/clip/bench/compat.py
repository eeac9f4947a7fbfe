"""A narrow compatibility fix for clip-benchmark 1.6.x under NumPy ≥ 2.4.

clip_benchmark's top-k accuracy (``clip_benchmark.metrics.zeroshot_classification.accuracy``, also imported by
``clip_benchmark.metrics.linear_probe``) converts a shape-(1,) NumPy array with ``float(...)``; NumPy 2.4 made
that a ``TypeError`` ("only 0-dimensional arrays can be converted to Python scalars"). `apply()` first calls
the original on a one-sample input: only when that raises ``TypeError`` does it rebind the name in those two
modules to `accuracy`, which computes the same numbers,

    acc@k = (1/N) · #{n : y_n ∈ top-k(logits_n)}          (as a fraction, not a percentage, like the original)

with ``.item()`` on a 0-d tensor instead. With NumPy < 2.4, or a clip-benchmark release that fixed it, nothing
is changed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def accuracy(output: torch.Tensor, target: torch.Tensor, topk: Sequence[int] = (1,)) -> list[float]:
    """Top-k accuracies (fractions) of logits `output` (N, C) for integer labels `target` (N,)."""
    pred = output.topk(max(topk), 1, True, True)[1].t()                  # (K, N) class ids, best first
    correct = pred.eq(target.view(1, -1).expand_as(pred))                  # (K, N)
    n = len(target)
    return [correct[:k].reshape(-1).float().sum().item() / n for k in topk]


def needs_fix() -> bool:
    """True when clip_benchmark's own accuracy fails on this NumPy (the 0-d conversion error)."""
    from clip_benchmark.metrics import zeroshot_classification

    try:
        zeroshot_classification.accuracy(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), topk=(1,))
    except TypeError:
        return True
    return False


def apply() -> bool:
    """Install `accuracy` in clip_benchmark's metric modules when needed; returns whether it did."""
    if not needs_fix():
        return False
    from clip_benchmark.metrics import linear_probe, zeroshot_classification

    zeroshot_classification.accuracy = accuracy
    linear_probe.accuracy = accuracy
    return True
