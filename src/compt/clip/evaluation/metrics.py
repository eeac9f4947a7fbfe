"""Ranking metrics on score matrices, in percent. Ties count against the model.

An item is ranked by how many *wrong* candidates score at least as high as its best correct one; it is a
hit at k when fewer than k do. With ties counted this way a constant model scores chance-or-worse, never
100 %.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Percentage of rows whose true class is among the k highest logits.

    logits (N, C), labels (N,). For k ≥ C every row is a hit.
    """
    correct = logits.gather(1, labels.view(-1, 1))                        # (N, 1)
    beaten_by = (logits >= correct).sum(dim=1) - 1                        # wrong classes scoring ≥ the true one
    return {k: 100.0 * (beaten_by < k).float().mean().item() for k in ks}


def retrieval_recall(sim: torch.Tensor, text_to_image: torch.Tensor, ks: Sequence[int] = (1, 5, 10)
                     ) -> dict[str, float]:
    """Image→text and text→image recall@k from a similarity matrix sim (N images, M texts).

    Caption m belongs to image ``text_to_image[m]``; an image may own several captions. i2t: image i is a
    hit at k when any of its captions ranks in the top k texts. t2i: caption m is a hit at k when its image
    ranks in the top k images. Keys ``i2t_r{k}`` and ``t2i_r{k}``.
    """
    n, m = sim.shape
    owns = torch.zeros(n, m, dtype=torch.bool, device=sim.device)
    owns[text_to_image, torch.arange(m, device=sim.device)] = True        # (N, M) image i owns caption m
    if not owns.any(dim=1).all():
        raise ValueError("every image needs at least one caption for image→text recall")
    best = sim.masked_fill(~owns, float("-inf")).max(dim=1, keepdim=True).values   # (N, 1)
    i2t_beaten = ((sim >= best) & ~owns).sum(dim=1)                       # wrong captions scoring ≥ best own
    own_score = sim[text_to_image, torch.arange(m, device=sim.device)]    # (M,)
    t2i_beaten = (sim >= own_score.view(1, -1)).sum(dim=0) - 1            # other images scoring ≥ own
    out = {}
    for k in ks:
        out[f"i2t_r{k}"] = 100.0 * (i2t_beaten < k).float().mean().item()
    for k in ks:
        out[f"t2i_r{k}"] = 100.0 * (t2i_beaten < k).float().mean().item()
    return out
