"""Evaluate a CLIP model on an `EvalSuite`: zero-shot classification, retrieval, linear probe.

`evaluate(model, suite)` returns percentages keyed

- ``zeroshot/<task>/top1``, ``zeroshot/<task>/top5`` — class names × prompt templates → averaged, normalised
  text embeddings, re-normalised (open_clip's `build_zero_shot_classifier`); cosine logits;
- ``retrieval/i2t_r1|r5|r10``, ``retrieval/t2i_r1|r5|r10`` — recall@k (an image with several captions is an
  i2t hit when any of them is in the top k);
- ``linear_probe/<task>/top1`` — ridge read-out of frozen normalised image embeddings (tasks with probe data);
- summaries ``zeroshot_top1`` (mean top-1 over zero-shot tasks), ``retrieval_r1`` (mean of i2t_r1 and t2i_r1)
  and ``linear_probe_top1`` (mean over probes), each when its parts exist.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Dataset

from compt.clip.evaluation.metrics import retrieval_recall, topk_accuracy
from compt.clip.evaluation.probe import linear_probe
from compt.clip.evaluation.suite import EvalSuite, RetrievalSet, ZeroShotTask
from compt.clip.tokenizer import tokenize

__all__ = ["EvalSuite", "RetrievalSet", "ZeroShotTask", "evaluate", "linear_probe", "retrieval_recall",
           "topk_accuracy", "zeroshot_classifier"]


def _first(batch: object) -> torch.Tensor:
    return batch[0] if isinstance(batch, (list, tuple)) else batch  # type: ignore[index,return-value]


class _Encoder:
    """Embeds image sets (once per set, by identity) and token batches with one model."""

    def __init__(self, model: torch.nn.Module, batch_size: int, device: torch.device) -> None:
        self.model, self.batch_size, self.device = model, batch_size, device
        self._images: dict[int, torch.Tensor] = {}

    def images(self, dataset: Dataset, indices: torch.Tensor | None = None) -> torch.Tensor:
        """(N, D) float32 normalised image embeddings on CPU (rows `indices` when given)."""
        key = id(dataset)
        if key not in self._images:
            chunks = [self.model.encode_image(_first(b).to(self.device), normalize=True).float().cpu()
                      for b in DataLoader(dataset, batch_size=self.batch_size)]
            self._images[key] = torch.cat(chunks)
        feats = self._images[key]
        return feats if indices is None else feats[indices]

    def texts(self, tokens: torch.Tensor) -> torch.Tensor:
        """(M, D) float32 normalised text embeddings on CPU."""
        chunks = [self.model.encode_text(tokens[i:i + self.batch_size].to(self.device), normalize=True).float().cpu()
                  for i in range(0, len(tokens), self.batch_size)]
        return torch.cat(chunks)


def zeroshot_classifier(model: torch.nn.Module, classnames: tuple[str, ...], templates: tuple[str, ...],
                        context_length: int, device: torch.device | str = "cpu", *,
                        batch_size: int = 256) -> torch.Tensor:
    """(D, C) zero-shot weights: per class, the mean of its normalised prompt embeddings, re-normalised."""
    from open_clip.zero_shot_classifier import build_zero_shot_classifier

    tokenizer: Callable[[list[str]], torch.Tensor] = lambda texts: tokenize(texts, context_length)  # noqa: E731
    weights = build_zero_shot_classifier(model, tokenizer, classnames, templates, device=device,
                                         num_classes_per_batch=max(1, batch_size // len(templates)))
    return weights.float().cpu()


def _zeroshot(enc: _Encoder, task: ZeroShotTask, ctx: int, key: str) -> dict[str, float]:
    feats = enc.images(task.images, task.indices)
    logits = feats @ zeroshot_classifier(enc.model, task.classnames, task.templates, ctx, enc.device,
                                         batch_size=enc.batch_size)
    acc = topk_accuracy(logits, task.labels.cpu(), (1, 5))
    out = {f"zeroshot/{key}/top1": acc[1], f"zeroshot/{key}/top5": acc[5]}
    if task.probe_images is not None and task.probe_labels is not None:
        train_x = enc.images(task.probe_images, task.probe_indices)
        out[f"linear_probe/{key}/top1"] = linear_probe(train_x, task.probe_labels.cpu(), feats, task.labels.cpu(),
                                                       len(task.classnames))
    return out


def _retrieval(enc: _Encoder, r: RetrievalSet) -> dict[str, float]:
    sim = enc.images(r.images) @ enc.texts(r.tokens).T                   # (N images, M captions)
    return {f"retrieval/{k}": v for k, v in retrieval_recall(sim, r.text_to_image.cpu()).items()}


@torch.no_grad()
def retrieval_embeddings(model: torch.nn.Module, suite: EvalSuite, *, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Normalised image (N, D) and caption (M, D) embeddings of the suite's retrieval split (empty without one),
    on the model's device, in eval mode (train/eval flags restored)."""
    if suite.retrieval is None:
        return {}
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    enc = _Encoder(model, batch_size, next(model.parameters()).device)
    try:
        return {"image": enc.images(suite.retrieval.images), "text": enc.texts(suite.retrieval.tokens)}
    finally:
        for m, training in modes:
            m.training = training


def _summaries(out: dict[str, float]) -> dict[str, float]:
    def mean(keys: list[str]) -> float:
        return sum(out[k] for k in keys) / len(keys)

    summary = {}
    zs = [k for k in out if k.startswith("zeroshot/") and k.endswith("/top1")]
    lp = [k for k in out if k.startswith("linear_probe/")]
    if zs:
        summary["zeroshot_top1"] = mean(zs)
    if "retrieval/i2t_r1" in out:
        summary["retrieval_r1"] = mean(["retrieval/i2t_r1", "retrieval/t2i_r1"])
    if lp:
        summary["linear_probe_top1"] = mean(lp)
    return summary


def evaluate(model: torch.nn.Module, suite: EvalSuite, *, batch_size: int = 256,
             device: str | torch.device | None = None) -> dict[str, float]:
    """All metrics of `suite` for `model` (an open_clip CLIP), in percent.

    Inputs go to `device` (default: the device of the model's parameters; the model is not moved). Runs in
    eval mode under no_grad and restores every module's train/eval flag afterwards.
    """
    if device is None:
        device = next(model.parameters()).device
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    enc = _Encoder(model, batch_size, torch.device(device))
    out: dict[str, float] = {}
    try:
        with torch.no_grad():
            seen: dict[str, int] = {}
            for task in suite.zeroshot:
                seen[task.name] = seen.get(task.name, 0) + 1
                key = task.name if seen[task.name] == 1 else f"{task.name}{seen[task.name]}"
                out.update(_zeroshot(enc, task, suite.context_length, key))
            if suite.retrieval is not None:
                out.update(_retrieval(enc, suite.retrieval))
    finally:
        for m, training in modes:
            m.training = training
    out.update(_summaries(out))
    return out
