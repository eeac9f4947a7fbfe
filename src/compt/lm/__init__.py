"""The language-model paradigm: decoder-only families (Hugging Face `transformers` Llama) for chain pre-training.

- `compt.lm.models`  `LMConfig`, the registry (``lm-cpu``, ``lm-pythia``, ``lm-test``), factory, HF export
- `compt.lm.flops`   analytic FLOPs (6·N·D plus attention), checked against FlopCounterMode
- `compt.lm.growth`  ``preserve`` (exact), ``stack`` and ``corner`` growth of Llama state dicts
- `compt.lm.losses`  next-token CE, token-level KL, hidden-state MSE
- `compt.lm.task`    LM tasks (plain and distilled from the frozen predecessor)
- `compt.lm.paradigm` the `compt.paradigm.Paradigm` adapter the core sees (rules, data, task, step, export)
- `compt.lm.data`    a run's corpus: training windows, the held-out loss, the ``hf/`` export of a stage
- `compt.lm.text`    plain-text corpora tokenised once into a memory-mapped token array
- `compt.lm.shards`  flat token shards (``kind = "tokens"``), memory-mapped; windows and splits by a hash of a key
- `compt.lm.corpus`  JSONL / Parquet / ``datasets`` documents (``kind = "documents"``) tokenised per file, cached
- `compt.lm.evaluate` held-out loss / perplexity of a checkpoint on a text file (`compt eval --data text`)
- `compt.lm.harness` lm-evaluation-harness on every member of a run, with the ``held-out`` task (extra ``lmeval``)

Chain members train in compt's one chain runner and trainer (`compt.chain`, `compt.train`).

Only `models` and `flops` import without the optional ``compt[lm]`` extra (transformers, tokenizers).
"""
