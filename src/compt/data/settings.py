"""`DataConfig`: the ``[data]`` table of a run config (where training and evaluation data come from).

It lives in `compt.data` so that the data modules need nothing from `compt.config`, which re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where training and evaluation data come from (see `compt.data`)."""

    kind: str = "synthetic"            # a key of `compt.data.ADAPTERS`
    path: str = ""                     # CSV/TSV file, webdataset shard pattern, or dataset root
    root: str = ""                     # image paths in a CSV are relative to this (default: the CSV's folder)
    num_samples: int = 10_000          # training pairs (synthetic size; planning size for remote data)
    eval_samples: int = 1_000          # held-out pairs for zero-shot / retrieval
    captions_per_image: int = 1        # caption slots per image (the official recipe uses 7)
    csv_img_key: str = "filepath"
    csv_caption_key: str = "caption"
    csv_separator: str = ","
    eval_path: str = ""                # optional held-out CSV/shards; default: a split of `path`
    max_bad_fraction: float = 0.01     # fail when more than this fraction of samples is unreadable
    seed: int = 0                      # dataset generation / split seed
    workers: int = 0                   # DataLoader worker processes
    caption_separator: str = ""        # split one caption field / .txt into several captions on this ("" = don't)
    predecode_max: int = 50_000        # sets with at most this many images are decoded once into memory
    cache_dir: str = ""                # pre-decoded tensors cache ("" = only the real-data adapters, under
                                       # $COMPT_CACHE_DIR or ~/.cache/compt; "none" = never)
    zeroshot_folder: str = ""          # extra zero-shot task from an image folder root/<class>/*.jpg
    probe_samples: int = 2_000         # labelled train images for the linear probe (0 = no probe)
    tokenizer: str | None = None       # kind "text": byte (default) | bpe (trained to the model's vocabulary)
    shuffle_buffer: int | None = None  # wds-stream: samples in each worker's shuffle buffer (None = 2000)
    resampled: bool | None = None      # wds-stream: draw shards with replacement (None = no: each shard once a pass)
