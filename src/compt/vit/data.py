"""Labelled images for the ViT paradigm and its metric, top-1 accuracy (%).

Kinds (``[data] kind``):

- ``synthetic``: coloured shapes drawn in memory — class c is shape c mod 3 (square, disc, cross) in hue
  c / K, at a random place and size on a noisy background; image i of a split is drawn from seed
  (data.seed, i). Training images are 0 … num_samples − 1, held-out ones the next eval_samples, validation
  ones the next val_samples: three disjoint draws.
- ``fashion-mnist``: the IDX files (gzip or plain) in ``path`` (default: Debian's dataset-fashion-mnist,
  ``/usr/share/datasets/fashion-mnist``): training images drawn from the 60,000 of ``train`` (num_samples at
  most), held-out ones the first eval_samples of ``t10k``, validation ones carved out of the training draw;
  grey images resized to the member's input and repeated over its channels.
- ``folder``: the ImageNet layout, ``path/<class>/*.{png,jpg,jpeg}`` (classes are the sorted folder names;
  their number must be the members' ``num_classes``); held-out images from ``eval_path`` (same layout) or,
  when unset, eval_samples images carved out of ``path``; a stopping rule's validation images from
  ``val_path`` or carved out of ``path`` (val_samples, else eval_samples). A carved image is the one with the
  smallest sha1(seed, relative path): deterministic, and independent of the other files. Carved images are
  never trained on. Images are decoded as they are read, resized to the member's img_size, scaled to [−1, 1].

Items are (image (C, H, W), label, index).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from compt.errors import UserError
from compt.paradigm_base import RunDataBase
from compt.vit.models import ViTConfig

KINDS = ("synthetic", "fashion-mnist", "folder")
FASHION_DIR = "/usr/share/datasets/fashion-mnist"
SUFFIXES = (".png", ".jpg", ".jpeg")
EVAL_BATCH = 256


# ----------------------------------------------------------------------------------------------- synthetic
def shape_image(label: int, classes: int, size: int, channels: int, g: torch.Generator) -> Tensor:
    """One (C, size, size) image of class `label` in [−1, 1] (module docstring)."""
    hue = label / classes
    colour = torch.tensor([math.cos(2 * math.pi * (hue + k / 3)) for k in range(3)])[:channels]
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    half = size * (0.2 + 0.15 * float(torch.rand((), generator=g)))
    cy, cx = (half + (size - 2 * half) * torch.rand(2, generator=g)).tolist()
    dy, dx = (yy - cy).abs(), (xx - cx).abs()
    mask = {0: (dy <= half) & (dx <= half), 1: dy**2 + dx**2 <= half**2,
            2: ((dy <= half / 3) & (dx <= half)) | ((dx <= half / 3) & (dy <= half))}[label % 3]
    img = 0.3 * torch.randn(channels, size, size, generator=g)
    return torch.where(mask, colour[:, None, None].expand_as(img), img).clamp(-1, 1)


class ShapesDataset(Dataset):
    """Images first … first + n − 1 of the synthetic stream (drawn once, held in memory)."""

    def __init__(self, cfg: ViTConfig, n: int, first: int, seed: int) -> None:
        self.labels = torch.tensor([(first + i) % cfg.num_classes for i in range(n)])
        self.images = torch.stack([
            shape_image(int(y), cfg.num_classes, cfg.img_size, cfg.in_chans,
                        torch.Generator().manual_seed(seed * 1_000_003 + first + i))
            for i, y in enumerate(self.labels)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, int]:
        return self.images[i], self.labels[i], i


# ----------------------------------------------------------------------------------------------- Fashion-MNIST
def read_idx(root: Path, stem: str) -> Tensor:
    """The uint8 array (N, …) of IDX file ``root/stem[.gz]`` (`compt.idx`); a `UserError` naming it when missing."""
    from compt.idx import fashion_mnist_file
    from compt.idx import read_idx as read_file

    return torch.from_numpy(read_file(fashion_mnist_file(root, stem)).copy())


class GreyDataset(Dataset):
    """Grey uint8 images (N, h, w) with labels, resized to the member's input in [−1, 1] once, held in memory."""

    def __init__(self, images: Tensor, labels: Tensor, cfg: ViTConfig) -> None:
        x = images.float().unsqueeze(1) / 127.5 - 1.0                                  # (N, 1, h, w)
        if x.shape[-1] != cfg.img_size:
            x = nn.functional.interpolate(x, size=(cfg.img_size, cfg.img_size), mode="bilinear", antialias=True)
        self.images, self.labels = x.expand(-1, cfg.in_chans, -1, -1).contiguous(), labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, int]:
        return self.images[i], self.labels[i], i


def fashion_sets(data: Any, cfg: ViTConfig, val_n: int) -> tuple[Dataset, Dataset | None]:
    """(training, validation) sets of Fashion-MNIST (module docstring); validation only for val_n > 0."""
    root = Path(data.path or FASHION_DIR)
    images, labels = read_idx(root, "train-images-idx3-ubyte"), read_idx(root, "train-labels-idx1-ubyte")
    pick = torch.randperm(len(labels), generator=torch.Generator().manual_seed(data.seed))
    pick = pick[:min(data.num_samples + val_n, len(pick))]
    if val_n >= len(pick):
        raise UserError(f"cannot carve {val_n} validation images out of {len(pick)}: lower data.val_samples")
    val, train = pick[:val_n], pick[val_n:]
    return (GreyDataset(images[train], labels[train], cfg),
            GreyDataset(images[val], labels[val], cfg) if val_n else None)


def held_out_set(data: Any, cfg: ViTConfig) -> Dataset:
    """The held-out set of `data` (a `compt.config.DataConfig`) for members of `cfg`'s input and classes, built
    alone (module docstring): what a run evaluates its members on and `compt eval` scores."""
    if data.kind == "synthetic":
        return ShapesDataset(cfg, data.eval_samples, data.num_samples, data.seed)
    if data.kind == "fashion-mnist":
        root, n = Path(data.path or FASHION_DIR), data.eval_samples
        return GreyDataset(read_idx(root, "t10k-images-idx3-ubyte")[:n], read_idx(root, "t10k-labels-idx1-ubyte")[:n],
                           cfg)
    if data.eval_path:
        return FolderDataset(Path(data.eval_path), folder_classes(Path(data.eval_path), cfg.num_classes)[1], cfg)
    return FolderDataset(Path(data.path), carve(folder_classes(Path(data.path), cfg.num_classes)[1],
                                                data.eval_samples, data.seed)[0], cfg)


# ----------------------------------------------------------------------------------------------- ImageFolder
def scan_folder(root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """(sorted class names, sorted (relative path, label)) of an ImageFolder root; a `UserError` naming it when
    it is not one."""
    if not root.is_dir():
        raise UserError(f"data path {root} is not a folder of class folders (root/<class>/*.png|jpg)")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = [(f.relative_to(root).as_posix(), y) for y, c in enumerate(classes)
             for f in sorted((root / c).rglob("*")) if f.suffix.lower() in SUFFIXES]
    if not files:
        raise UserError(f"data path {root} holds no images in class folders (root/<class>/*.png|jpg)")
    return classes, files


def carve(files: list[tuple[str, int]], n: int, seed: int) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(the n files of smallest sha1(seed, path), the rest), both in path order."""
    key = {f: hashlib.sha1(f"{seed}:{f[0]}".encode()).hexdigest() for f in files}
    chosen = set(sorted(files, key=key.__getitem__)[:n])
    if n >= len(files):
        raise UserError(f"cannot carve {n} images out of {len(files)}: lower data.eval_samples / data.val_samples")
    return [f for f in files if f in chosen], [f for f in files if f not in chosen]


class FolderDataset(Dataset):
    """Images of an ImageFolder root, decoded as read and resized to the member's input."""

    def __init__(self, root: Path, files: list[tuple[str, int]], cfg: ViTConfig) -> None:
        self.root, self.files, self.size, self.channels = root, files, cfg.img_size, cfg.in_chans

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        import numpy as np
        from PIL import Image

        rel, label = self.files[i]
        with Image.open(self.root / rel) as im:
            im = im.convert("RGB" if self.channels == 3 else "L").resize((self.size, self.size), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.float32).reshape(self.size, self.size, self.channels)
        return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1.0, label, i


# ----------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def top1(model: nn.Module, data: Dataset) -> float:
    """Top-1 accuracy in percent: 100 · (1/N) Σ_i [argmax_k z_ik = y_i]."""
    device, was = next(model.parameters()).device, model.training
    model.eval()
    right = total = 0
    for images, labels, _ in DataLoader(data, batch_size=EVAL_BATCH):
        right += int((model(images.to(device)).argmax(-1).cpu() == labels).sum())
        total += len(labels)
    model.train(was)
    return 100.0 * right / total


class ViTData(RunDataBase):
    """A run's labelled images (module docstring); sets are built once per input shape."""

    label = "this image data"

    def __init__(self, data: Any, carve_validation: bool) -> None:
        """`data`: a `compt.config.DataConfig`."""
        self.data, self.carve_validation = data, carve_validation
        self.val_n = data.val_samples if data.val_samples is not None else data.eval_samples
        self._sets: dict[tuple[Any, ...], tuple[Dataset, Dataset, Dataset | None]] = {}

    def splits(self, cfg: ViTConfig) -> tuple[Dataset, Dataset, Dataset | None]:
        """(training, held-out, validation or None) sets of members of `cfg`'s input shape and classes."""
        shape = (cfg.img_size, cfg.in_chans, cfg.num_classes)
        if shape not in self._sets:
            self._sets[shape] = self._build(cfg)
        return self._sets[shape]

    def _build(self, cfg: ViTConfig) -> tuple[Dataset, Dataset, Dataset | None]:
        d = self.data
        held = held_out_set(d, cfg)
        if d.kind == "synthetic":
            n, e = d.num_samples, d.eval_samples
            return ShapesDataset(cfg, n, 0, d.seed), held, ShapesDataset(cfg, self.val_n, n + e, d.seed)
        if d.kind == "fashion-mnist":
            train, val = fashion_sets(d, cfg, self.val_n if self.carve_validation else 0)
            return train, held, val
        root = Path(d.path)
        _, files = folder_classes(root, cfg.num_classes)
        if not d.eval_path:   # the images held_out_set carved are not trained on
            files = carve(files, d.eval_samples, d.seed)[1]
        val = None
        if d.val_path:
            val = FolderDataset(Path(d.val_path), folder_classes(Path(d.val_path), cfg.num_classes)[1], cfg)
        elif self.carve_validation:
            carved, files = carve(files, self.val_n, d.seed + 1)
            val = FolderDataset(root, carved, cfg)
        return FolderDataset(root, files, cfg), held, val

    def train_set(self, model_cfg: ViTConfig) -> Dataset:
        return self.splits(model_cfg)[0]

    def evaluator(self, model_cfg: ViTConfig) -> Any:
        held = self.splits(model_cfg)[1]
        return lambda model: {"top1": top1(model, held)}

    def validator(self, model_cfg: ViTConfig) -> Any:
        val = self.splits(model_cfg)[2]
        if val is None:
            return super().validator(model_cfg)
        return lambda model: {"top1": top1(model, val)}

    def fingerprint(self) -> dict[str, Any]:
        """ImageFolder roots: each one's image count and a hash of its relative paths and sizes; Fashion-MNIST: its
        folder and the sizes of its files."""
        if self.data.kind == "fashion-mnist":
            root = Path(self.data.path or FASHION_DIR)
            return {"root": str(root), "files": {f.name: f.stat().st_size for f in sorted(root.glob("*ubyte*"))}}
        if self.data.kind != "folder":
            return {}
        out = {}
        for key in ("path", "eval_path", "val_path"):
            if root := getattr(self.data, key):
                _, files = scan_folder(Path(root))
                h = hashlib.sha1("".join(f"{f}:{(Path(root) / f).stat().st_size};" for f, _ in files).encode())
                out[key] = {"root": str(root), "images": len(files), "sha1": h.hexdigest()}
        return out

    def representations(self, model: nn.Module, model_cfg: ViTConfig) -> dict[str, Tensor]:
        """Pre-logit features (64, d) of the first held-out images."""
        from compt.vit.task import forward_vit

        held = self.splits(model_cfg)[1]
        images = torch.stack([held[i][0] for i in range(min(64, len(held)))])
        with torch.no_grad():
            return {"features": forward_vit(model, images.to(next(model.parameters()).device))[1].float().cpu()}


def folder_classes(root: Path, num_classes: int) -> tuple[list[str], list[tuple[str, int]]]:
    """`scan_folder`, refusing a root whose class count is not the members' ``num_classes``."""
    classes, files = scan_folder(root)
    if len(classes) != num_classes:
        raise UserError(f"data folder {root} has {len(classes)} classes, the members classify {num_classes}")
    return classes, files
