"""Validation rules of a language-model chain (`compt.config.validate` asks `lm_chain_rules` for LM runs)."""

from __future__ import annotations

from collections.abc import Sequence

from compt.data.settings import DataConfig
from compt.errors import UserError
from compt.lm.flops import lm_flops
from compt.lm.growth import LM_GROWTH_OPS, validate_lm_growth
from compt.lm.models import get_lm_config, is_lm
from compt.lm.task import LM_DISTILL_KINDS
from compt.lm.text import TOKENIZERS
from compt.rules import ChainRules


def lm_chain_rules(models: Sequence[str], data: DataConfig) -> ChainRules:
    """Validation rules of an LM chain (`compt.config.validate` calls this for LM runs)."""
    if not all(is_lm(m) for m in models):
        raise UserError("a chain cannot mix language models and CLIP models")
    if data.kind != "text":
        raise UserError(f"language models train on [data] kind = \"text\", not {data.kind!r}")
    if data.tokenizer not in (None, *TOKENIZERS):
        raise UserError(f"unknown tokenizer {data.tokenizer!r} (known: {', '.join(TOKENIZERS)})")
    cfgs = [get_lm_config(m) for m in models]
    for c in cfgs[1:]:
        if (c.vocab_size, c.context_length) != (cfgs[0].vocab_size, cfgs[0].context_length):
            raise UserError(f"every member must share the vocabulary and context ({c.name} differs from "
                            f"{cfgs[0].name}): they read the same token array")
    return ChainRules(configs=cfgs, flops=[lm_flops(c).forward for c in cfgs],
                      growth_ops=(*LM_GROWTH_OPS, "none"), distill_losses=(*LM_DISTILL_KINDS, "none"),
                      validate_growth=validate_lm_growth)
