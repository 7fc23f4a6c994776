"""The one in-memory container every data set of the course is loaded into.

A meta-split (meta-train, meta-val or meta-test) is an `ImageSet`: all its
images as one uint8 tensor ``[n, C, H, W]`` plus an integer class index per
image. Keeping everything in one tensor makes episode sampling a couple of
index operations (paper notes 1), whatever the source of the images was.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class ImageSet:
    """Images of one meta-split, grouped by class.

    images:    uint8 tensor [n, C, H, W] (0 = background for glyphs).
    targets:   int64 tensor [n], class index 0..len(classes)-1 of each image.
    classes:   a human-readable name per class (e.g. "U+0041 LATIN A").
    alphabets: the alphabet (script / Unicode block, Omniglot alphabet) of
               each class, or None where the data set has no such grouping.
    name:      e.g. "glyphs/train".
    """

    images: Tensor
    targets: Tensor
    classes: list[str]
    alphabets: list[str] | None = None
    name: str = ""
    _by_class: list[Tensor] = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"{self.name or 'ImageSet'}: images must be a uint8 tensor [n, C, H, W], "
                f"got {self.images.dtype} {tuple(self.images.shape)}")
        self.targets = torch.as_tensor(self.targets, dtype=torch.long)
        if self.targets.shape != (self.images.shape[0],):
            raise ValueError(f"{self.name or 'ImageSet'}: {self.images.shape[0]} images "
                             f"but {self.targets.numel()} targets")
        if self.alphabets is not None and len(self.alphabets) != len(self.classes):
            raise ValueError("one alphabet per class is needed")
        order = torch.argsort(self.targets, stable=True)
        counts = torch.bincount(self.targets, minlength=len(self.classes)).tolist()
        self._by_class = list(torch.split(order, counts))

    def fingerprint(self) -> str:
        """SHA-256 of the contents: the class names, every image's bytes and every target
        (not the name, which two different folders can share). What a cache of something made
        from these images is keyed by (metalstm.baselines, evaluate --reuse)."""
        if getattr(self, "_fingerprint", None) is None:
            h = hashlib.sha256(json.dumps([list(self.classes), list(self.image_shape)]).encode())
            h.update(self.images.contiguous().numpy().tobytes())
            h.update(self.targets.contiguous().numpy().tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    # -- sizes -------------------------------------------------------------
    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        return tuple(self.images.shape[1:])

    def class_sizes(self) -> Tensor:
        """Number of images of each class, int64 [num_classes]."""
        return torch.tensor([len(i) for i in self._by_class], dtype=torch.long)

    def indices_of(self, c: int) -> Tensor:
        """Indices (into images) of the images of class c."""
        return self._by_class[c]

    # -- access --------------------------------------------------------------
    def float_images(self, indices: Tensor) -> Tensor:
        """Images at `indices` as float32 in [0, 1], [k, C, H, W]."""
        return self.images[indices].float().div_(255.0)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        """(float image [C, H, W], class index): usable with a DataLoader."""
        return self.images[i].float() / 255.0, int(self.targets[i])

    def subset(self, class_ids: list[int], name: str | None = None) -> "ImageSet":
        """A new ImageSet of only these classes, renumbered 0..len(class_ids)-1."""
        idx = torch.cat([self._by_class[c] for c in class_ids]) if class_ids else torch.zeros(0, dtype=torch.long)
        remap = torch.full((self.num_classes,), -1, dtype=torch.long)
        remap[torch.as_tensor(class_ids, dtype=torch.long)] = torch.arange(len(class_ids))
        return ImageSet(
            images=self.images[idx], targets=remap[self.targets[idx]],
            classes=[self.classes[c] for c in class_ids],
            alphabets=None if self.alphabets is None else [self.alphabets[c] for c in class_ids],
            name=name or self.name)

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        return (f"ImageSet({self.name!r}: {len(self)} images of {c}x{h}x{w}, "
                f"{self.num_classes} classes)")
