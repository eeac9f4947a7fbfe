"""Run a chain of language models (and their individual baselines) from a run config.

Same run directory, stage plan, resume rules and fingerprints as the CLIP chain (`compt.chain`: this module
reuses `prepare_run`, `RunState`, `fingerprint`); what differs is the model kind:
members are `LMConfig`s, growth is `compt.lm.growth`, distillation is `compt.lm.task` and the data is a text
corpus (``[data] kind = "text"``) tokenised once into ``RUN/data/`` (tokens + ``tokenizer.json``, which each
stage's Hugging Face export ``hf/`` also carries). `train_chain` hands LM runs to `train_lm_chain`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from compt.chain import RunState, Stage, fingerprint, is_main, prepare_run, slug, write_json
from compt.config import ChainRules, RunConfig
from compt.errors import UserError
from compt.lm.flops import lm_flops
from compt.lm.growth import LM_GROWTH_OPS, validate_lm_growth
from compt.lm.models import LMConfig, build_lm, get_lm_config, is_lm
from compt.lm.task import LM_DISTILL_KINDS
from compt.lm.text import TOKENIZERS


def lm_chain_rules(cfg: RunConfig) -> ChainRules:
    """Validation rules of an LM chain (`compt.config.validate` calls this for LM runs)."""
    if not all(is_lm(m.model) for m in cfg.chain):
        raise UserError("a chain cannot mix language models and CLIP models")
    if cfg.data.kind != "text":
        raise UserError(f"language models train on [data] kind = \"text\", not {cfg.data.kind!r}")
    if cfg.data.tokenizer not in (None, *TOKENIZERS):
        raise UserError(f"unknown tokenizer {cfg.data.tokenizer!r} (known: {', '.join(TOKENIZERS)})")
    cfgs = [get_lm_config(m.model) for m in cfg.chain]
    for c in cfgs[1:]:
        if (c.vocab_size, c.context_length) != (cfgs[0].vocab_size, cfgs[0].context_length):
            raise UserError(f"every member must share the vocabulary and context ({c.name} differs from "
                            f"{cfgs[0].name}): they read the same token array")
    return ChainRules(configs=cfgs, flops=[lm_flops(c).forward for c in cfgs],
                      growth_ops=(*LM_GROWTH_OPS, "none"), distill_losses=(*LM_DISTILL_KINDS, "none"),
                      validate_growth=validate_lm_growth)


def text_data(cfg: RunConfig, run_dir: Path) -> tuple[Any, Any, Any]:
    """(train windows, held-out windows, corpus), tokenised once into RUN/data: the last `eval_samples` windows
    of the corpus are held out, training uses the first `num_samples` windows of the rest (or all there are)."""
    from compt.lm.text import default_corpus, split, tokenize_corpus

    first = get_lm_config(cfg.chain[0].model)
    corpus = tokenize_corpus(cfg.data.path or default_corpus(), run_dir / "data",
                             tokenizer=cfg.data.tokenizer or "byte", vocab_size=first.vocab_size)
    train, held = split(corpus, first.context_length, cfg.data.eval_samples * first.context_length,
                        max_train=cfg.data.num_samples)
    return train, held, corpus


def _grow(stage_dir: Path, parent_ckpt: Path, parent: dict[str, Any], child: LMConfig, op: str,
          seed: int) -> dict[str, torch.Tensor]:
    """The child's initial weights, grown once into init.pt (atomic; growth time in its lineage)."""
    from compt.checkpoint import sha256_file
    from compt.lm.growth import grow_lm
    from compt.lm.train import load_lm_checkpoint, save_lm_checkpoint

    init = stage_dir / "init.pt"
    if not init.is_file() and is_main():
        t0 = time.perf_counter()
        if op == "none":
            torch.manual_seed(seed)
            state = build_lm(child).state_dict()
        else:
            state = grow_lm(parent["state_dict"], parent["lm_config"], child, op, seed)
        lineage = {"parent": str(parent_ckpt), "parent_sha256": sha256_file(parent_ckpt), "operator": op,
                   "seed": seed, "stage": "grow", "grow_s": time.perf_counter() - t0}
        save_lm_checkpoint(init, state_dict=state, cfg=child, lineage=lineage)
    return load_lm_checkpoint(init)


def run_lm_stage(run_dir: Path, cfg: RunConfig, stage: Stage, state: RunState, data: tuple[Any, Any, Any],
                 progress: bool) -> dict[str, Any]:
    """Grow (if needed) and train one LM stage; returns its stored result."""
    from compt.lm.train import load_lm_checkpoint, train_lm_stage

    d, model_cfg = run_dir / stage.directory, get_lm_config(stage.member.model)
    if (d / "result.json").is_file() and (d / "final.pt").is_file():
        state.set(stage.key, "done")
        return json.loads((d / "result.json").read_text())
    state.set(stage.key, "running")
    init, teacher, lineage = None, None, {"stage": stage.key, "kind": stage.kind}
    if not stage.from_scratch:
        parent_ckpt = run_dir / f"chain/{stage.index:02d}-{slug(cfg.chain[stage.index - 1].model)}/final.pt"
        parent = load_lm_checkpoint(parent_ckpt)
        grown = _grow(d, parent_ckpt, parent, model_cfg, stage.member.growth, cfg.train.seed)
        init, teacher = grown["state_dict"], (parent["lm_config"], parent["state_dict"])
        lineage.update({k: grown["lineage"][k] for k in ("parent", "parent_sha256", "operator", "grow_s")},
                       distill=stage.member.distill, distill_weight=stage.member.distill_weight)
    lineage.update(epochs=stage.member.epochs, seed=cfg.train.seed, model=model_cfg.name)
    write_json(d / "lineage.json", {**lineage, "fingerprint": fingerprint(cfg, stage)})
    torch.manual_seed(cfg.train.seed)
    train, held, corpus = data
    try:
        result = train_lm_stage(out_dir=d, cfg=model_cfg, member=stage.member, train=cfg.train, data=train,
                                held_out=held, init_state=init, teacher=teacher, lineage=lineage,
                                from_scratch=stage.from_scratch, temperature=stage.member.distill_temperature or 1.0,
                                tokenizer_file=corpus.tokenizer_file, progress=progress)
    except BaseException:
        state.set(stage.key, "failed")
        raise
    state.set(stage.key, "done")
    return result.to_dict()


def train_lm_chain(cfg: RunConfig, run_dir: str | Path, *, baselines: bool | None = None,
                   from_stage: str | None = None, progress: bool = True) -> dict[str, dict[str, Any]]:
    """Every stage of an LM run config in `run_dir` (resuming finished work); results by stage key."""
    run_dir = Path(run_dir)
    cfg, stages, state = prepare_run(cfg, run_dir, baselines, from_stage)
    data = text_data(cfg, run_dir)
    return {s.key: run_lm_stage(run_dir, cfg, s, state, data, progress) for s in stages}

