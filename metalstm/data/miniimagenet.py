"""Mini-ImageNet in Ravi & Larochelle's split-CSV format (paper notes 1).

Layout (what the authors' split files and most copies of the data set use):

    root/train.csv, root/val.csv, root/test.csv   header `filename,label`
    root/images/<filename>                         the JPEGs

64 / 16 / 20 classes, 600 images each. Images are RGB, resized to
image_size x image_size (84 in the paper) with PIL's antialiased bilinear
filter. Classes are the label strings (WordNet ids such as n01532829) in
order of first appearance in the CSV.

Decoding 38,400 JPEGs takes minutes, so the decoded uint8 tensor is cached
beside the data in root/cache/<split>-<size>.pt (written atomically, read with
weights_only=True, with a SHA-256 of its arrays) and reused while the CSV is
unchanged and the arrays match their checksum; a damaged cache is decoded again.
"""
from __future__ import annotations

import csv
import hashlib
import os
import warnings
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from metalstm.data.base import ImageSet

SPLITS = ("train", "val", "test")
HEADER = ["filename", "label"]


def read_split_csv(path: Path) -> tuple[list[str], list[str]]:
    """(filenames, labels) of a `filename,label` CSV; ValueError naming the file if malformed."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or [h.strip() for h in rows[0]] != HEADER:
        got = rows[0] if rows else "an empty file"
        raise ValueError(f"{path}: the first line must be the header 'filename,label', got {got!r}")
    filenames, labels = [], []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise ValueError(f"{path}, line {line}: expected 'filename,label', got {row!r}")
        filenames.append(row[0].strip())
        labels.append(row[1].strip())
    if not filenames:
        raise ValueError(f"{path} lists no images (only the header)")
    return filenames, labels


def decode_image(path: Path, image_size: int, mode: str = "RGB") -> torch.Tensor:
    """One image file as uint8 [C, image_size, image_size] (antialiased bilinear resize)."""
    try:
        with Image.open(path) as img:
            img = img.convert(mode).resize((image_size, image_size), Image.BILINEAR)
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None
    channels = len(mode)
    pixels = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    return pixels.view(image_size, image_size, channels).permute(2, 0, 1)


def _arrays_sha256(images: torch.Tensor, targets: torch.Tensor) -> str:
    """SHA-256 of the decoded images and their targets (what the cache must give back)."""
    h = hashlib.sha256(images.contiguous().numpy().tobytes())
    h.update(targets.to(torch.long).contiguous().numpy().tobytes())
    return h.hexdigest()


def _save_atomic(obj: dict, path: Path) -> None:
    from metalstm.checkpoint import atomic_write
    atomic_write(path, lambda f: torch.save(obj, f))


def load_mini_imagenet(root: str | os.PathLike, split: str = "train", image_size: int = 84,
                       cache: bool = True) -> ImageSet:
    """One meta-split of Mini-ImageNet as an ImageSet of uint8 [n, 3, image_size, image_size]."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not isinstance(image_size, int) or image_size <= 0:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    root = Path(root).expanduser().absolute()
    csv_path = root / f"{split}.csv"
    if not root.is_dir():
        raise FileNotFoundError(
            f"Mini-ImageNet not found: {root} does not exist. Expected {root}/train.csv, "
            f"val.csv, test.csv (header 'filename,label', Ravi & Larochelle's split) and the "
            f"JPEGs in {root}/images/")
    if not csv_path.is_file():
        raise FileNotFoundError(f"Mini-ImageNet split file not found: {csv_path} "
                                f"(header 'filename,label', one line per image in {root}/images/)")

    csv_hash = hashlib.sha256(csv_path.read_bytes()).hexdigest()
    cache_path = root / "cache" / f"{split}-{image_size}.pt"
    if cache and cache_path.is_file():
        try:
            saved = torch.load(cache_path, weights_only=True)
            if saved.get("csv_sha256") == csv_hash:
                if saved.get("sha256") != _arrays_sha256(saved["images"], saved["targets"]):
                    raise ValueError("its arrays do not match their checksum")
                return ImageSet(saved["images"], saved["targets"], list(saved["classes"]),
                                name=f"mini-imagenet/{split}")
        except Exception as e:  # a damaged cache is rebuilt, never trusted
            warnings.warn(f"ignoring unreadable cache {cache_path} ({e}); decoding again")

    filenames, labels = read_split_csv(csv_path)
    classes = list(dict.fromkeys(labels))                 # first-appearance order
    class_id = {c: i for i, c in enumerate(classes)}
    images = torch.empty(len(filenames), 3, image_size, image_size, dtype=torch.uint8)
    for i, name in enumerate(tqdm(filenames, desc=f"mini-imagenet/{split}", unit="img", disable=None)):
        images[i] = decode_image(root / "images" / name, image_size)
    targets = torch.tensor([class_id[c] for c in labels], dtype=torch.long)

    if cache:
        try:
            _save_atomic({"images": images, "targets": targets, "classes": classes,
                          "csv_sha256": csv_hash, "sha256": _arrays_sha256(images, targets)}, cache_path)
        except OSError as e:                               # e.g. a read-only data folder
            warnings.warn(f"could not write the cache {cache_path} ({e}); "
                          f"the next load will decode the images again")
    return ImageSet(images, targets, classes, name=f"mini-imagenet/{split}")
