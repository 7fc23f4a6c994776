"""Data sets of the course: the embedded glyphs (default) and loaders for real data.

`load_dataset(name, split)` is the one entry point the rest of the package
uses; each name maps to a loader that returns an `ImageSet` of one meta-split
("train", "val" or "test", classes disjoint across splits, paper notes 1).
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from metalstm.data.base import ImageSet
from metalstm.data.folders import load_image_folder
from metalstm.data.glyphs import load_glyphs
from metalstm.data.miniimagenet import load_mini_imagenet
from metalstm.data.omniglot import load_omniglot

__all__ = ["ImageSet", "load_omniglot", "load_mini_imagenet", "load_image_folder",
           "load_dataset", "DATASETS"]

DATASETS = {
    "glyphs": "embedded Unicode glyphs, 28x28 gray, split by script (no files needed)",
    "digits": "embedded handwritten digits (scikit-learn's 8x8, as 28x28 gray), meta-test only",
    "omniglot": "root holds omniglot-py/images_background and images_evaluation; 28x28 gray",
    "mini-imagenet": "root holds train.csv, val.csv, test.csv and images/; 84x84 RGB",
    "folder": "root holds train/, val/, test/, each with one sub-folder per class; 84x84 RGB "
              "(or the size and channels asked for: gray with in_channels=1)",
}
SPLITS = ("train", "val", "test")


def load_dataset(name: str, split: str, root: str | os.PathLike | None = None,
                 image_size: int | None = None, channels: int | None = None,
                 val_alphabets: tuple[str, ...] | None = None) -> ImageSet:
    """One meta-split ("train" | "val" | "test") of the data set `name` (see DATASETS).
    channels (1 gray, 3 RGB) converts the images of a "folder" data set, whatever their files
    hold (default 3); the other data sets have the channels they have. val_alphabets: Omniglot's
    meta-validation alphabets (default metalstm.data.omniglot.VAL_ALPHABETS)."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if image_size is not None and (not isinstance(image_size, int) or isinstance(image_size, bool)
                                   or image_size < 1):
        raise ValueError(f"image_size must be a whole number >= 1 (pixels per side), got {image_size!r}")
    if name == "glyphs":
        data = load_glyphs(split)
        return data if image_size in (None, data.image_shape[-1]) else resized(data, image_size)
    if name == "digits":                                  # only "test": an out-of-domain meta-test set
        from metalstm.data.digits import load_digits
        data = load_digits(split)
        return data if image_size in (None, data.image_shape[-1]) else resized(data, image_size)
    if root is None:
        raise ValueError(f"data set {name!r} needs root=, the folder that holds it: {DATASETS[name]}")
    if name == "omniglot":
        return load_omniglot(root, split, image_size or 28,
                             **({"val_alphabets": tuple(val_alphabets)} if val_alphabets else {}))
    if name == "mini-imagenet":
        return load_mini_imagenet(root, split, image_size or 84)
    return load_image_folder(os.path.join(root, split), image_size or 84,
                             channels=3 if channels is None else channels, name=f"folder/{split}")


def resized(data: ImageSet, image_size: int) -> ImageSet:
    """The same images at image_size x image_size (antialiased bilinear)."""
    x = F.interpolate(data.images.float(), size=(image_size, image_size), mode="bilinear",
                      antialias=True, align_corners=False)
    images = x.round().clamp_(0, 255).to(torch.uint8)
    return ImageSet(images, data.targets, data.classes, data.alphabets, data.name)
