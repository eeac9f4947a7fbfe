"""What an evaluation runs on: zero-shot class sets, a retrieval split, linear-probe data.

Images are `torch.utils.data.Dataset`s whose item is a normalised float image (3, H, W) (or a tuple whose
first element is one). Tasks that share one image set (the synthetic shape/colour/count tasks all label the
same held-out scenes) are embedded once; `indices` picks the task's subset of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset


@dataclass(frozen=True, kw_only=True)
class ZeroShotTask:
    """Classify ``images[indices]`` into ``classnames`` with prompts ``templates`` (``"a photo of a {}."``)."""

    name: str
    images: Dataset
    labels: torch.Tensor                       # (M,) class index per evaluated image
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    indices: torch.Tensor | None = None        # (M,) rows of `images`; None = all, in order
    probe_images: Dataset | None = None        # labelled training images for a linear probe (optional)
    probe_labels: torch.Tensor | None = None   # (P,)
    probe_indices: torch.Tensor | None = None  # (P,) rows of `probe_images`; None = all

    def __post_init__(self) -> None:
        n = len(self.images) if self.indices is None else len(self.indices)
        if len(self.labels) != n:
            raise ValueError(f"task {self.name}: {len(self.labels)} labels for {n} images")
        if "{}" not in "".join(self.templates):
            raise ValueError(f"task {self.name}: templates need a '{{}}' placeholder")


@dataclass(frozen=True, kw_only=True)
class RetrievalSet:
    """Image ↔ text retrieval: caption m describes image ``text_to_image[m]`` (an image may have several)."""

    images: Dataset
    tokens: torch.Tensor          # (M, context_length) long
    text_to_image: torch.Tensor   # (M,) long

    def __post_init__(self) -> None:
        if len(self.tokens) != len(self.text_to_image):
            raise ValueError("retrieval: one image index per caption is required")


@dataclass(frozen=True, kw_only=True)
class EvalSuite:
    """Held-out data of one source: zero-shot tasks, optional retrieval, at one context length."""

    name: str
    context_length: int
    zeroshot: tuple[ZeroShotTask, ...] = ()
    retrieval: RetrievalSet | None = None

    def describe(self) -> str:
        """One line: what this suite measures."""
        parts = [f"{t.name} ({len(t.labels)} images, {len(t.classnames)} classes"
                 f"{', probe' if t.probe_images is not None else ''})" for t in self.zeroshot]
        if self.retrieval is not None:
            parts.append(f"retrieval ({len(self.retrieval.images)} images, {len(self.retrieval.tokens)} captions)")
        return f"{self.name}: " + ", ".join(parts)
