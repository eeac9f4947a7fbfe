"""Run a chain of language models (and their individual baselines) from a run config.

Same run directory, stage plan, resume rules and fingerprints as the CLIP chain (`compt.chain`: this module
reuses `prepare_run`, `RunState`, `fingerprint` and `stage_spec`, so a stage's settings are resolved in one place);
what differs is the model kind:
members are `LMConfig`s, growth is `compt.lm.growth`, distillation is `compt.lm.task` and the data is a text
corpus (``[data] kind = "text"``) tokenised once into ``RUN/data/`` (tokens + ``tokenizer.json``, which each
stage's Hugging Face export ``hf/`` also carries). `compt.runner.train_run` hands LM runs to `train_lm_chain`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from compt.chain import (
    RunState,
    Stage,
    fingerprint,
    grow_once,
    prepare_run,
    run_session,
    stage_dir,
    stage_spec,
    write_json,
)
from compt.config import RunConfig, read_run_config
from compt.errors import Interrupted
from compt.lm.models import LMConfig, build_lm, get_lm_config


def corpus_dir(run_dir: Path) -> Path:
    """Where a run's corpus is tokenised once: tokens and its ``tokenizer.json`` (`compt.lm.text`)."""
    return Path(run_dir) / "data"


def tokenizer_kind(cfg: RunConfig) -> str:
    """The run's tokenizer (`compt.lm.text.TOKENIZERS`): ``data.tokenizer``, byte-level when unset."""
    return cfg.data.tokenizer or "byte"


def run_of(checkpoint: str | Path) -> Path | None:
    """The run directory of a stage checkpoint ``RUN/chain|baselines/<stage>/*.pt``; None for a loose file."""
    parents = Path(checkpoint).resolve().parents
    return parents[2] if len(parents) > 2 and (parents[2] / "config.toml").is_file() else None


def run_tokenizer(run_dir: Path) -> tuple[str, Path]:
    """(kind, stored ``tokenizer.json``) of the run's corpus; the file exists once the first stage has started."""
    from compt.lm.text import TOKENIZER_FILE

    return tokenizer_kind(read_run_config(run_dir)), corpus_dir(run_dir) / TOKENIZER_FILE


def text_data(cfg: RunConfig, run_dir: Path) -> tuple[Any, Any, Any]:
    """(train windows, held-out windows, corpus), tokenised once into RUN/data: the last `eval_samples` windows
    of the corpus are held out, training uses the first `num_samples` windows of the rest (or all there are)."""
    from compt.lm.text import default_corpus, split, tokenize_corpus

    first = get_lm_config(cfg.chain[0].model)
    corpus = tokenize_corpus(cfg.data.path or default_corpus(), corpus_dir(run_dir),
                             tokenizer=tokenizer_kind(cfg), vocab_size=first.vocab_size)
    train, held = split(corpus, first.context_length, cfg.data.eval_samples,
                        max_train=cfg.data.num_samples)
    return train, held, corpus


def _grow(stage_dir: Path, parent_ckpt: Path, parent: dict[str, Any], child: LMConfig, op: str,
          seed: int) -> dict[str, Any]:
    """The child's initial weights, grown once into init.pt (`compt.chain.grow_once`)."""
    from compt.checkpoint import sha256_file
    from compt.lm.growth import grow_lm
    from compt.lm.train import load_lm_checkpoint, save_lm_checkpoint

    def make() -> dict[str, torch.Tensor]:
        if op == "none":
            torch.manual_seed(seed)
            return build_lm(child).state_dict()
        return grow_lm(parent["state_dict"], parent["lm_config"], child, op, seed)

    init = stage_dir / "init.pt"
    lineage = {"parent": str(parent_ckpt), "parent_sha256": sha256_file(parent_ckpt), "operator": op, "seed": seed}
    grow_once(init, lineage, make,
              lambda path, state, lin: save_lm_checkpoint(path, state_dict=state, cfg=child, lineage=lin))
    return load_lm_checkpoint(init)


def run_lm_stage(run_dir: Path, cfg: RunConfig, stage: Stage, state: RunState, data: tuple[Any, Any, Any],
                 progress: bool) -> dict[str, Any]:
    """Grow (if needed) and train one LM stage (its `StageSpec` from `compt.chain.stage_spec`); returns its
    stored result."""
    from compt.lm.train import load_lm_checkpoint, train_lm_stage
    from compt.train import load_result

    d = run_dir / stage.directory
    done = load_result(d)
    if done is not None:
        state.set(stage.key, "done")
        return done.to_dict()
    state.set(stage.key, "running")
    train, held, corpus = data
    spec = stage_spec(cfg, stage, len(train))
    init, teacher, lineage = None, None, {"stage": stage.key, "kind": stage.kind, "run": run_dir.name}
    if spec.parent is not None:
        parent_ckpt = run_dir / stage_dir("chain", stage.index - 1, cfg.chain[stage.index - 1].model) / "final.pt"
        parent = load_lm_checkpoint(parent_ckpt)
        grown = _grow(d, parent_ckpt, parent, spec.model, spec.growth, spec.seed)
        init, teacher = grown["state_dict"], parent["state_dict"] if spec.distills else None
        lineage.update({k: grown["lineage"][k] for k in ("parent", "parent_sha256", "operator", "grow_s")},
                       distill=stage.member.distill, distill_weight=spec.distill_weight)
    lineage.update(epochs=spec.epochs, seed=spec.seed, model=spec.model.name)
    write_json(d / "lineage.json", {**lineage, "fingerprint": fingerprint(cfg, stage), "spec": spec.summary()})
    torch.manual_seed(spec.seed)
    try:
        result = train_lm_stage(spec, out_dir=d, data=train, held_out=held, init_state=init, teacher_state=teacher,
                                lineage=lineage, tokenizer_file=corpus.tokenizer_file, progress=progress)
    except BaseException as e:  # a requested stop resumes like any other: it did not fail
        state.set(stage.key, "interrupted" if isinstance(e, (Interrupted, KeyboardInterrupt)) else "failed")
        raise
    state.set(stage.key, "done")
    return result.to_dict()


def train_lm_chain(cfg: RunConfig, run_dir: str | Path, *, baselines: bool | None = None,
                   from_stage: str | None = None, progress: bool = True) -> dict[str, dict[str, Any]]:
    """Every stage of an LM run config in `run_dir` (resuming finished work); results by stage key."""
    run_dir = Path(run_dir)
    with run_session(cfg, run_dir) as threads:
        cfg, stages, state = prepare_run(cfg, run_dir, baselines, from_stage, threads)
        data = text_data(cfg, run_dir)
        return {s.key: run_lm_stage(run_dir, cfg, s, state, data, progress) for s in stages}

