"""Linear probe: multinomial logistic regression on frozen image features, in plain torch.

Features are standardised with the training set's mean/std, then W, b minimise
``CE(x W + b, y) + λ ‖W‖²`` by full-batch L-BFGS (strong-Wolfe line search) from zero — deterministic
for fixed inputs. The probe is small by design: it is a read-out of what the features separate linearly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fit_linear_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int, *,
                     weight_decay: float = 1e-4, max_iter: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit W (D, C), b (C,) on standardised `features` (N, D); returns them for the *standardised* space."""
    x = features.float()
    w = torch.zeros(x.shape[1], num_classes, dtype=x.dtype, device=x.device, requires_grad=True)
    b = torch.zeros(num_classes, dtype=x.dtype, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, labels) + weight_decay * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 num_classes: int, *, weight_decay: float = 1e-4) -> float:
    """Top-1 accuracy (%) on (test_x, test_y) of a probe trained on (train_x, train_y)."""
    mean = train_x.mean(dim=0, keepdim=True)
    std = train_x.std(dim=0, keepdim=True).clamp_min(1e-6)
    w, b = fit_linear_probe((train_x - mean) / std, train_y, num_classes, weight_decay=weight_decay)
    pred = (((test_x - mean) / std) @ w + b).argmax(dim=1)
    return 100.0 * (pred == test_y).float().mean().item()
