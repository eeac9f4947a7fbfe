"""`preserve` on the paper's real shapes (224 px, 77 tokens; batch 1): the child computes the parent's embeddings.

Covers 12 → 24 layers with 12 → 16 vision heads (B → L), a ×2 width with text width and heads changing
(T → S), a non-integer width ratio 768 → 1024 (B → BL, B → L) and embedding growth 512 → 768 (B → BL).
The parents are randomised (non-constant LayerNorm gains, ln_pre included), as a trained model would be.
"""

from __future__ import annotations

import pytest
import torch
from test_growth import assert_same_function, grown, parent_model

from compt.clip.models import ModelConfig, get_model_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base() -> tuple[ModelConfig, torch.nn.Module]:
    return parent_model("paper/ViT-B-16")


def _check(pcfg: ModelConfig, parent: torch.nn.Module, child_name: str) -> None:
    ccfg = get_model_config(child_name)
    assert_same_function(parent, grown(parent, pcfg, ccfg), pcfg, ccfg)


@pytest.mark.parametrize(("parent", "child"), [("paper/ViT-T-16", "paper/ViT-S-16"),
                                               ("paper/ViT-S-16", "paper/ViT-B-16")])
def test_preserve_small_real_shapes(parent: str, child: str) -> None:
    _check(*parent_model(parent), child)


@pytest.mark.parametrize("child", ["paper/ViT-L-16", "paper/ViT-BL-16"])
def test_preserve_base_to_large(base, child: str) -> None:
    _check(*base, child)
