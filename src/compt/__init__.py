"""compt — Chain-of-Models Pre-Training (CoM-PT) for CLIP model families on open_clip."""

__version__ = "0.1.0"
