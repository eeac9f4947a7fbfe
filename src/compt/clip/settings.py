"""The CLIP paradigm's own run-config settings: `ClipDataConfig`, its `[data]` table (`Paradigm.data_options`), and
`ClipMemberConfig`, its `[[chain]]` tables (`Paradigm.member_options`).

The keys sit in the run config's flat tables beside the shared ones (`compt.settings`); a chain of CLIP models
parses the tables into these classes, and the CLIP code (`compt.clip.data`, the stage's patch dropout) reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from compt.errors import UserError
from compt.settings import DataConfig, MemberConfig, check_range


@dataclass(frozen=True, kw_only=True)
class ClipDataConfig(DataConfig):
    """Image–caption data: CSV/TSV columns, captions per image, decoding, caches and the extra evaluations."""

    root: str = ""                     # image paths in a CSV are relative to this (default: the CSV's folder)
    captions_per_image: int = 1        # caption slots per image (the official recipe uses 7)
    csv_img_key: str = "filepath"      # CSV column of the image paths
    csv_caption_key: str = "caption"   # CSV column of the captions
    csv_separator: str = ","           # CSV field separator (`"\t"` for TSV)
    max_bad_fraction: float = 0.01     # fail when more than this fraction of samples is unreadable
    workers: int = 0                   # DataLoader worker processes
    caption_separator: str = ""        # split one caption field / .txt into several captions on this ("" = don't)
    predecode_max: int = 50_000        # sets with at most this many images are decoded once into memory
    cache_dir: str = ""                # pre-decoded tensors cache ("" = only the real-data adapters, under
                                       # $COMPT_CACHE_DIR or ~/.cache/compt; "none" = never)
    zeroshot_folder: str = ""          # extra zero-shot task from an image folder root/<class>/*.jpg
    probe_samples: int = 2_000         # labelled train images for the linear probe (0 = no probe)
    shuffle_buffer: int | None = None  # wds-stream: samples in each worker's shuffle buffer (None = 2000)
    resampled: bool | None = None      # wds-stream: draw shards with replacement (None = no: each shard once a pass)

    @property
    def caption_slots(self) -> int:
        return self.captions_per_image

    def check(self) -> None:
        super().check()
        check_range("data", self, {"captions_per_image": (1, None, True), "probe_samples": (0, None, True),
                                   "max_bad_fraction": (0, 1, True), "workers": (0, None, True),
                                   "predecode_max": (0, None, True)})
        if self.shuffle_buffer is not None and self.shuffle_buffer < 1:
            raise UserError(f"data.shuffle_buffer must be at least 1, got {self.shuffle_buffer!r}")


@dataclass(frozen=True, kw_only=True)
class ClipMemberConfig(MemberConfig):
    """A CLIP chain member: FLIP-style patch dropout while it trains."""

    patch_dropout: float | None = None     # fraction of image patches dropped while this member trains (FLIP)

    def stage_options(self) -> dict[str, Any]:
        return {"patch_dropout": self.patch_dropout or 0.0}

    def check(self, where: str, has_patches: bool) -> None:
        if self.patch_dropout is not None and not 0 <= self.patch_dropout < 1:
            raise UserError(f"{where}: patch_dropout must be in [0, 1), got {self.patch_dropout}")
        if self.patch_dropout and not has_patches:
            raise UserError(f"{where}: patch_dropout needs a ViT image tower (Swin models have no patch tokens to "
                            "drop)")
