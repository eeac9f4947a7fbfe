"""train.compile over a chain: every member's blocks stay compiled (dynamo's recompile limit is never hit).

Dynamo keys its graphs on the code object of ``ResidualAttentionBlock.forward``, shared by both towers of
every member; each width and mode (train with grad, eval without) adds entries. Backend "eager": dynamo traces
and guards exactly as with inductor, without a C++ build.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from compt import distributed
from compt.clip.models import create_model
from compt.paradigm import paradigm_named

CHAIN = ("tiny/ViT-N", "tiny/ViT-C", "tiny/ViT-S", "tiny/ViT-M")  # 4 members, 4 widths


def _limit_hits() -> int:
    return sum(n for reason, n in counters["unimplemented"].items() if "recompile limit" in reason.lower())


def test_four_members_compile_train_and_eval_without_hitting_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distributed, "COMPILE_BACKEND", "eager")
    info = distributed.init_distributed()
    counters.clear()
    g = torch.Generator().manual_seed(0)
    images, tokens = torch.randn(2, 3, 32, 32, generator=g), torch.randint(1, 400, (2, 32), generator=g)
    for name in CHAIN:
        torch.manual_seed(0)
        eager = create_model(name)
        model = create_model(name, state_dict=eager.state_dict())
        model = distributed.wrap_student(model, info, compile=True,  # one call per stage, as the trainer does
                                         blocks=paradigm_named("clip").block_types())
        for train in (True, False):
            eager.train(train), model.train(train)
            with torch.set_grad_enabled(train):
                got, want = model(images, tokens), eager(images, tokens)
                if train:
                    got[0].sum().backward()
            for a, b in zip(got, want, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert _limit_hits() == 0, f"dynamo's recompile limit hit by {name}: its blocks ran eagerly"
    assert counters["stats"]["unique_graphs"] >= 4 * 2  # every member's blocks compiled, in both modes
