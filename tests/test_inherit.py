"""Partial inheritance (`compt.inherit`): which tensors of a grown init each rule keeps, on CLIP (ViT and Swin)
and language-model layouts, and the rules each paradigm refuses."""

from __future__ import annotations

import re

import pytest
import torch

from compt.chain import fresh_state
from compt.config import config_from_dict, validate
from compt.errors import UserError
from compt.inherit import InheritRule, inherit, parse_inherit
from compt.paradigm import paradigm_named


def _pair(paradigm: str, parent: str, child: str, op: str = "preserve") -> tuple:
    """(paradigm, child config, grown state, fresh child state) for a parent at a fresh init."""
    p = paradigm_named(paradigm)
    a, b = p.member_config(parent, None), p.member_config(child, None)
    grown = p.grow(fresh_state(p, a, 1), a, b, op, 0)
    return p, b, grown, fresh_state(p, b, 2)


def _block(key: str) -> int | None:
    m = re.search(r"(?:resblocks|layers)\.(\d+)\.", key)
    return int(m.group(1)) if m else None


def test_parse_inherit_reads_every_form_and_names_them_on_a_typo() -> None:
    assert parse_inherit("all") == InheritRule()
    assert parse_inherit("vision") == InheritRule(tower="vision")
    assert parse_inherit("first:3") == InheritRule(first=3)
    for bad in ("first:0", "first:-1", "first:x", "first", "", "last:2", "vision:2"):
        with pytest.raises(ValueError, match="inherit must be all, a tower"):
            parse_inherit(bad)


@pytest.mark.parametrize("tower", ["vision", "text"])
def test_one_tower_is_the_grown_one_and_everything_else_the_fresh_init(tower: str) -> None:
    p, b, grown, fresh = _pair("clip", "test/A", "test/B")
    out = inherit(grown, fresh, parse_inherit(tower), lambda k: p.key_place(b, k))
    for k, v in out.items():
        own = k.startswith("visual.") if tower == "vision" else not k.startswith("visual.") and k != "logit_scale"
        assert v is (grown[k] if own else fresh[k]), k
    assert {k for k, v in out.items() if v is grown[k]} and {k for k, v in out.items() if v is fresh[k]}


def test_first_k_keeps_the_stem_and_the_first_blocks_of_each_tower() -> None:
    p, b, grown, fresh = _pair("clip", "test/A", "test/C")
    assert b.vision.layers > 1 and b.text.layers > 1
    out = inherit(grown, fresh, parse_inherit("first:1"), lambda k: p.key_place(b, k))
    stem = ("visual.conv1.", "visual.class_embedding", "visual.positional_embedding", "visual.ln_pre.",
            "token_embedding.", "positional_embedding")
    for k, v in out.items():
        block = _block(k)
        kept = block < 1 if block is not None else k.startswith(stem)     # heads and the logit scale: fresh
        assert v is (grown[k] if kept else fresh[k]), k


def test_first_k_counts_swin_blocks_over_the_stages() -> None:
    p, b, grown, fresh = _pair("clip", "test/Swin-A", "test/Swin-B", "corner")
    depths = b.vision.swin.depths
    out = inherit(grown, fresh, parse_inherit(f"first:{depths[0]}"), lambda k: p.key_place(b, k))
    for k, v in out.items():
        if k.startswith("visual.trunk.layers."):   # stage 0 kept; stage 1's patch merging and blocks fresh
            assert v is (grown[k] if k.startswith("visual.trunk.layers.0.") else fresh[k]), k
    assert out["visual.trunk.patch_embed.proj.weight"] is grown["visual.trunk.patch_embed.proj.weight"]


def test_language_models_keep_the_first_layers_and_a_tied_head_with_its_embedding() -> None:
    p, b, grown, fresh = _pair("lm", "lm/test-A", "lm/test-B")
    assert b.tie_embeddings and b.layers == 3
    out = inherit(grown, fresh, parse_inherit("first:2"), lambda k: p.key_place(b, k))
    for k, v in out.items():
        block = _block(k)
        kept = block < 2 if block is not None else k in ("model.embed_tokens.weight", "lm_head.weight")
        assert v is (grown[k] if kept else fresh[k]), k
    assert out["lm_head.weight"].data_ptr() == out["model.embed_tokens.weight"].data_ptr()
    p.create(b, out)   # loads strictly


def test_all_is_the_grown_state_itself_and_shapes_are_asserted() -> None:
    p, b, grown, fresh = _pair("clip", "test/A", "test/B")
    assert inherit(grown, fresh, parse_inherit("all"), lambda k: p.key_place(b, k)) is grown
    wrong = {**fresh, "visual.proj": torch.zeros(1, 1)}
    with pytest.raises(AssertionError, match="visual.proj"):
        inherit(grown, wrong, parse_inherit("text"), lambda k: p.key_place(b, k))
    with pytest.raises(ValueError, match="differ in keys"):
        inherit(grown, {"x": torch.zeros(1)}, parse_inherit("text"), lambda k: p.key_place(b, k))


LM = {"name": "lm", "data": {"kind": "text", "num_samples": 64, "eval_samples": 16},
      "train": {"batch_size": 16},
      "chain": [{"model": "lm/test-A", "epochs": 1}, {"model": "lm/test-B", "epochs": 1}]}


@pytest.mark.parametrize("tower", ["vision", "text"])
def test_a_language_model_chain_refuses_a_tower_in_one_line(tower: str) -> None:
    raw = {**LM, "chain": [LM["chain"][0], {**LM["chain"][1], "inherit": tower}]}
    with pytest.raises(UserError, match=f"inherit = '{tower}' names a tower, but this chain's models have no "
                                        "towers to inherit alone \\(use all or first:K\\)"):
        validate(config_from_dict(raw))
    validate(config_from_dict({**LM, "chain": [LM["chain"][0], {**LM["chain"][1], "inherit": "first:1"}]}))
