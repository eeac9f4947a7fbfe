"""Labelled train / held-out splits to fine-tune on, named ``KIND[:ARG]`` (`parse_data`).

- ``synthetic[:TASK]`` — the embedded corpus (`compt.clip.data.synthetic`) labelled by one of its zero-shot
  attributes (default ``shape``, 8 classes; also colour, count, size, position): training images are scenes
  0… of split 0 (the pre-training split's images), held-out ones scenes of split 1 — separate random streams.
- ``fashion-mnist[:ROOT]`` — Debian's ``dataset-fashion-mnist`` (or the IDX files in ROOT): seeded draws from
  the train file for training and from the t10k file held out.
- ``folder:PATH`` — an image folder ``PATH/<class>/*``: a seeded permutation holds out min(eval_samples, n // 5)
  images, the rest (at most train_samples) trains.

Every split is deterministic from the fine-tuning seed and the member's image size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from compt.clip.finetune.recipe import Split
from compt.errors import UserError, unknown_name
from compt.finetune_config import FinetuneConfig

KINDS = ("synthetic", "fashion-mnist", "folder")


@dataclass(frozen=True)
class LabelledData:
    """What ``--data`` names: a kind, its argument, and the name its results are filed under."""

    kind: str
    arg: str = ""

    @property
    def name(self) -> str:
        """``synthetic`` (shape) / ``synthetic-colour`` …, ``fashion-mnist``, ``folder-<folder name>``."""
        if self.kind == "synthetic":
            return "synthetic" if self.arg in ("", "shape") else f"synthetic-{self.arg}"
        return f"folder-{Path(self.arg).resolve().name}" if self.kind == "folder" else self.kind

    @property
    def spec(self) -> str:
        return f"{self.kind}:{self.arg}" if self.arg else self.kind


def parse_data(spec: str) -> LabelledData:
    """``KIND[:ARG]`` → `LabelledData`, checked before any model is loaded (unknown kinds and tasks, a folder
    that is not there)."""
    from compt.clip.data import synthetic

    kind, _, arg = spec.partition(":")
    if kind not in KINDS:
        raise unknown_name("fine-tuning data kind", kind, KINDS)
    if kind == "synthetic" and arg and arg not in synthetic.ZEROSHOT_TEMPLATES:
        raise unknown_name("synthetic label", arg, synthetic.ZEROSHOT_TEMPLATES)
    if kind == "folder" and not arg:
        raise UserError("--data folder needs its path: folder:PATH (PATH/<class>/*.jpg)")
    if kind == "folder" and not Path(arg).is_dir():
        raise UserError(f"image folder not found: {arg}")
    return LabelledData(kind, arg)


def load_splits(data: LabelledData, size: int, cfg: FinetuneConfig) -> tuple[Split, Split]:
    """(train, held-out) of `data` at `size` × `size` pixels."""
    if data.kind == "synthetic":
        return _synthetic(data.arg or "shape", size, cfg, 0), _synthetic(data.arg or "shape", size, cfg, 1)
    if data.kind == "fashion-mnist":
        return _fashion(data.arg, size, cfg, "train"), _fashion(data.arg, size, cfg, "t10k")
    return _folder(data.arg, size, cfg)


def _synthetic(task: str, size: int, cfg: FinetuneConfig, split: int) -> Split:
    from compt.clip.data import synthetic

    scenes = synthetic.sample_scenes(cfg.seed, split, cfg.train_samples if split == 0 else cfg.eval_samples)
    classes, labels, idx = synthetic.zeroshot_labels(scenes)[task]   # idx: the scenes the task labels
    images = torch.from_numpy(synthetic.render(scenes.select(idx), size))
    return Split(images, torch.as_tensor(labels, dtype=torch.long), tuple(classes))


def _fashion(root: str, size: int, cfg: FinetuneConfig, split: str) -> Split:
    from compt.clip.data import real
    from compt.clip.settings import ClipDataConfig

    data = ClipDataConfig(kind="fashion-mnist", path=root, seed=cfg.seed)
    count, stream = (cfg.train_samples, 0) if split == "train" else (cfg.eval_samples, 1)
    labelled = real.fashion_mnist(data, size, split, count, stream)
    return Split(labelled.images, labelled.labels, labelled.classnames)


def _folder(root: str, size: int, cfg: FinetuneConfig) -> tuple[Split, Split]:
    from compt.clip.data import labelled_folder, real
    from compt.clip.settings import ClipDataConfig

    labelled = labelled_folder(root, ClipDataConfig(kind="folder", path=root, seed=cfg.seed), size)
    n = len(labelled.labels)
    n_eval = min(cfg.eval_samples, n // 5)
    if n_eval == 0:
        raise UserError(f"{root}: {n} images are too few to hold out a split (needs at least 5)")
    order = torch.from_numpy(real.subset(n, n, cfg.seed, stream=1))
    held, train = order[:n_eval].sort().values, order[n_eval:n_eval + cfg.train_samples].sort().values
    return (Split(labelled.images[train], labelled.labels[train], labelled.classnames),
            Split(labelled.images[held], labelled.labels[held], labelled.classnames))
