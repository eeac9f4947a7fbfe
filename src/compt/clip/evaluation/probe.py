"""Linear probe: a ridge-regression read-out of frozen image features, solved in closed form.

Features are standardised with the training set's mean/std; with one-hot targets Y (N, C) and a bias
column appended to X, the probe is

    W = argmin ‖X W − Y‖² + λ N ‖W‖²  =  (XᵀX + λ N I)⁻¹ XᵀY        (bias not penalised)

and a sample is classified by argmax(x W). One float64 solve of a (D+1)×(D+1) system: deterministic and
instant, so it can run at every evaluation (an iterative logistic-regression fit cost tens of seconds per
evaluation on 2 CPU cores). It is a read-out of what the features separate linearly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fit_linear_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int, *,
                     weight_decay: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit W (D, C), b (C,) on standardised `features` (N, D); returns them for the *standardised* space."""
    x = torch.cat([features.double(), torch.ones(len(features), 1, dtype=torch.float64)], dim=1)
    y = F.one_hot(labels.long(), num_classes).double()
    reg = weight_decay * len(x) * torch.eye(x.shape[1], dtype=torch.float64)
    reg[-1, -1] = 0.0
    w = torch.linalg.solve(x.T @ x + reg, x.T @ y)
    return w[:-1].to(features.dtype), w[-1].to(features.dtype)


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 num_classes: int, *, weight_decay: float = 1e-4) -> float:
    """Top-1 accuracy (%) on (test_x, test_y) of a probe trained on (train_x, train_y)."""
    mean = train_x.mean(dim=0, keepdim=True)
    std = train_x.std(dim=0, keepdim=True).clamp_min(1e-6)
    w, b = fit_linear_probe((train_x - mean) / std, train_y, num_classes, weight_decay=weight_decay)
    pred = (((test_x - mean) / std) @ w + b).argmax(dim=1)
    return 100.0 * (pred == test_y).float().mean().item()
