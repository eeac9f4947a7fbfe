"""Image decoding and open_clip preprocessing.

Every image goes through open_clip's eval transform: resize the shortest side to the model's image size
(bicubic, antialiased), center crop, RGB, scale to [0, 1], normalise with OPENAI_DATASET_MEAN/STD. The
first steps give a uint8 (3, H, W) tensor, which is what small sets keep in memory (pre-decoded once);
`normalize` does the last step, exactly as ``ToTensor`` + ``Normalize`` would. Images with transparency are
composited on white first (clip art is drawn on transparent backgrounds; dropping alpha would give black).
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image

log = logging.getLogger("compt.clip.data")

OPENAI_MEAN, OPENAI_STD = OPENAI_DATASET_MEAN, OPENAI_DATASET_STD  # open_clip's, the CLIP normalisation
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
_MEAN = torch.tensor(OPENAI_MEAN).view(3, 1, 1)
_STD = torch.tensor(OPENAI_STD).view(3, 1, 1)
_MEAN_NP = _MEAN.numpy()
_STD_NP = _STD.numpy()


@dataclass(frozen=True)
class TarMember:
    """An image stored inside a tar shard: read ``size`` bytes at ``offset`` of ``shard``."""

    shard: str
    offset: int
    size: int
    name: str

    def __str__(self) -> str:
        return f"{self.shard}:{self.name}"


ImageRef = str | TarMember | bytes


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, H, W) → float32 normalised with open_clip's OPENAI mean/std (ToTensor + Normalize).

    On CPU this runs in numpy, single-threaded: the same float32 operations in the same order (bit-identical
    results), but no intra-op thread pool to contend with the training step for the cores.
    """
    if images.device.type != "cpu":
        mean, std = _device_constants(images.device, torch.float32)
        return (images.float().div(255) - mean) / std
    out = images.numpy().astype(np.float32)
    out /= 255
    out -= _MEAN_NP
    out /= _STD_NP
    return torch.from_numpy(out)


@functools.cache
def _device_constants(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std (3, 1, 1) on `device`, copied there once: a training step then copies no constants from
    the host (each copy would be a host-device sync of its own)."""
    return _MEAN.to(device, dtype), _STD.to(device, dtype)


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """A batch as the model takes it: uint8 (B, 3, H, W) is normalised where it lies (on the GPU after a
    uint8 copy); float batches are already normalised and pass through."""
    return normalize(images) if images.dtype == torch.uint8 else images


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB copy of a PIL image; transparent pixels are composited on white."""
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if not has_alpha:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(canvas, rgba).convert("RGB")


def resize_center_crop(image: Image.Image, size: int) -> torch.Tensor:
    """open_clip eval geometry (shortest side → size, bicubic + antialias, center crop) → uint8 (3, size, size)."""
    import torchvision.transforms as T

    tf = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC, antialias=True), T.CenterCrop(size)])
    array = np.asarray(tf(to_rgb(image)), dtype=np.uint8)  # (H, W, 3)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def open_image(ref: ImageRef) -> Image.Image:
    """Open and fully decode an image file, tar member or encoded bytes (raises on missing/corrupt data)."""
    if isinstance(ref, TarMember):
        with open(ref.shard, "rb") as f:
            f.seek(ref.offset)
            data = f.read(ref.size)
        if len(data) != ref.size:
            raise OSError(f"tar member truncated ({len(data)} of {ref.size} bytes)")
        ref = data
    with warnings.catch_warnings():  # very large clip art trips PIL's bomb *warning*; the hard limit still raises
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(ref) if isinstance(ref, bytes) else ref)
        image.load()  # decode now so truncated files fail here, not later
    return image


def load_image(ref: ImageRef, size: int) -> torch.Tensor:
    """Decode + preprocess one image → uint8 (3, size, size)."""
    return resize_center_crop(open_image(ref), size)


def describe(ref: ImageRef) -> str:
    """Short name of an image reference for error reports."""
    return f"<{len(ref)} bytes>" if isinstance(ref, bytes) else str(ref)


class TensorImages(torch.utils.data.Dataset):
    """Pre-decoded images: uint8 (N, 3, H, W) in memory; item i → normalised float (3, H, W)."""

    def __init__(self, images: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return normalize(self.images[i])

    def __getitems__(self, indices: Sequence[int]) -> list[torch.Tensor]:
        return list(normalize(torch.from_numpy(self.images.numpy()[np.asarray(indices, dtype=np.int64)])).unbind(0))


class _DecodeJob(torch.utils.data.Dataset):
    """Decode each reference once; item → (index, uint8 image or None, error message)."""

    def __init__(self, refs: Sequence[ImageRef], size: int) -> None:
        self.refs, self.size = refs, size

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str]:
        try:
            return i, load_image(self.refs[i], self.size), ""
        except Exception as e:  # PIL raises many types for corrupt data
            return i, None, f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else 'unreadable'}"


def _keep_list(batch: list) -> list:
    return batch


def decode_all(refs: Sequence[ImageRef], size: int, *, workers: int = 0,
               progress: Callable[[int], None] | None = None) -> tuple[torch.Tensor, dict[int, str]]:
    """Decode every image (in `workers` processes when > 0) → (uint8 (N, 3, size, size), {index: error}).

    Failed images are left black in the tensor and reported in the error dict.
    """
    out = torch.zeros(len(refs), 3, size, size, dtype=torch.uint8)
    errors: dict[int, str] = {}
    loader = torch.utils.data.DataLoader(_DecodeJob(refs, size), batch_size=64, num_workers=workers,
                                         collate_fn=_keep_list)
    for batch in loader:
        for i, image, err in batch:
            if image is None:
                errors[i] = err
            else:
                out[i] = image
        if progress is not None:
            progress(len(batch))
    return out, errors


def cache_key(*parts: object) -> str:
    """Stable short hash of the things a cached tensor depends on."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def load_cached(path: Path | None) -> dict[str, torch.Tensor] | None:
    """A cached dict of tensors, or None when absent/unreadable (a broken cache is rebuilt, not fatal)."""
    if path is None or not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        log.warning("ignoring unreadable data cache %s (%s)", path, type(e).__name__)
        return None


def save_cached(path: Path | None, payload: dict[str, torch.Tensor]) -> None:
    """Atomically write a cache file (best effort: an unwritable cache dir only logs a warning)."""
    if path is None:
        return
    try:
        from compt.checkpoint import atomic_save

        atomic_save(payload, path)
    except OSError as e:
        log.warning("cannot write data cache %s: %s", path, e)
