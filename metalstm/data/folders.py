"""Any folder-per-class image set as one meta-split.

    root/<class name>/<image>.png|jpg|jpeg|bmp|gif|webp

Classes are the sub-folders sorted by name; images inside a class are sorted
by file name. Every image is converted to gray (channels=1) or RGB
(channels=3) and resized to image_size x image_size (antialiased bilinear).
Hidden files and folders (starting with ".") are skipped.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from tqdm.auto import tqdm

from metalstm.data.base import ImageSet
from metalstm.data.miniimagenet import decode_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def load_image_folder(root: str | os.PathLike, image_size: int, channels: int = 3,
                      name: str | None = None) -> ImageSet:
    """The images under root/<class>/ as an ImageSet of uint8 [n, channels, image_size, image_size]."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (gray) or 3 (RGB), got {channels!r}")
    if not isinstance(image_size, int) or image_size <= 0:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root} (expected one sub-folder per "
                                f"class: {root}/<class>/<image>.png)")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise FileNotFoundError(f"{root} has no class sub-folders (expected {root}/<class>/<image>.png)")

    files, targets = [], []
    for c, d in enumerate(class_dirs):
        found = sorted(f for f in d.iterdir() if f.is_file() and not f.name.startswith(".")
                       and f.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise FileNotFoundError(f"class folder {d} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        files += found
        targets += [c] * len(found)

    mode = "L" if channels == 1 else "RGB"
    name = name or root.name
    images = torch.empty(len(files), channels, image_size, image_size, dtype=torch.uint8)
    for i, f in enumerate(tqdm(files, desc=name, unit="img")):
        images[i] = decode_image(f, image_size, mode)
    return ImageSet(images, torch.tensor(targets), [d.name for d in class_dirs], name=name)
