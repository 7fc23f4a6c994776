"""Any folder-per-class image set as one meta-split.

    root/<class name>/<image>.png|jpg|jpeg|bmp|gif|webp

Classes are the sub-folders sorted by name; images inside a class are sorted
by file name. Every image is converted to the channels asked for, whatever the
file holds (gray, RGB, RGBA, palette, 16-bit gray, CMYK):

    channels=1: gray, PIL's "L" (L = 0.299 R + 0.587 G + 0.114 B for colour files)
    channels=3: RGB (a gray file's value in all three channels)

A transparent image (an alpha channel, or a palette with a transparent colour)
is first laid over white, as a viewer shows it; 16-bit gray is scaled to 8 bits.
Then each image is resized to image_size x image_size (antialiased bilinear).
Hidden files and folders (starting with ".") are skipped.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from metalstm.data.base import ImageSet

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def to_mode(img: Image.Image, mode: str) -> Image.Image:
    """img as mode "L" (gray) or "RGB": transparency laid over white, 16-bit and float gray scaled
    to 0..255 (PIL's own convert would clip them), every other mode through PIL's convert."""
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        img = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img.alpha_composite(rgba)
    elif img.mode.startswith("I") or img.mode == "F":     # I;16*, I (16-bit PNGs), F
        import numpy as np
        a = np.asarray(img, dtype=np.float64)
        if img.mode == "F" and a.size and a.max() <= 1.0:
            a = a * 255.0                                  # floats in [0, 1]
        elif img.mode != "F" and a.size and (img.mode.startswith("I;16") or a.max() > 255):
            a = a / 257.0                                  # 0..65535 -> 0..255
        img = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    return img.convert(mode)


def decode_image(path: Path, image_size: int, channels: int) -> torch.Tensor:
    """One image file as uint8 [channels, image_size, image_size]: converted by `to_mode`, then
    resized (antialiased bilinear)."""
    mode = "L" if channels == 1 else "RGB"
    try:
        with Image.open(path) as img:
            img = to_mode(img, mode).resize((image_size, image_size), Image.BILINEAR)
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None
    pixels = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    return pixels.view(image_size, image_size, channels).permute(2, 0, 1)


def load_image_folder(root: str | os.PathLike, image_size: int, channels: int = 3,
                      name: str | None = None) -> ImageSet:
    """The images under root/<class>/ as an ImageSet of uint8 [n, channels, image_size, image_size]:
    channels=1 gray, channels=3 RGB, whatever mode each file is stored in (see the module's notes)."""
    if isinstance(channels, bool) or channels not in (1, 3):
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

    name = name or root.name
    images = torch.empty(len(files), channels, image_size, image_size, dtype=torch.uint8)
    for i, f in enumerate(tqdm(files, desc=name, unit="img", disable=None)):
        images[i] = decode_image(f, image_size, channels)
    return ImageSet(images, torch.tensor(targets), [d.name for d in class_dirs], name=name)
