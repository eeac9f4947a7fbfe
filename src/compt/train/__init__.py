"""The training engine: `train_stage` trains one chain member (plain CLIP or grown + distilled).

See `compt.train.trainer` for the stage folder layout and resume guarantees, `compt.clip.tasks` for the
losses a stage optimises and `compt.distributed` for multi-process runs (torchrun).
"""

from compt.train.trainer import StageResult, load_result, train_stage

__all__ = ["StageResult", "load_result", "train_stage"]
