"""Omniglot (Lake et al. 2015) as meta-splits of handwritten characters (paper notes 1).

1,623 characters from 50 alphabets, 20 drawings each, read through
`torchvision.datasets.Omniglot` with downloading off (no data set is ever
downloaded by this course). The split follows Lake et al.'s own
background / evaluation division, by alphabet:

- test  = the "evaluation" set (20 alphabets, 659 characters);
- val   = the background alphabets in `VAL_ALPHABETS` (5 alphabets, held out);
- train = the other 25 background alphabets.

(Vinyals et al. 2016 instead split 1,200 / 423 characters at random across all
alphabets; splitting by alphabet, as here and for the glyphs, is the harder and
cleaner test: no meta-test character shares an alphabet with a meta-train one.)

The files store black strokes on white; images are inverted so ink is high
(255) like the glyphs, and resized from 105x105 to `image_size`.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from metalstm.data.base import ImageSet

# Background alphabets held out for meta-validation (a fixed choice of this
# course: 5 of the 30 background alphabets, scripts of different looks).
VAL_ALPHABETS = ("Bengali", "Futurama", "Hebrew", "Korean", "Tifinagh")

SPLITS = ("train", "val", "test")
FOLDER = "omniglot-py"        # torchvision's Omniglot.folder
HOW_TO_GET = (
    "Get images_background.zip and images_evaluation.zip from the official repository "
    "https://github.com/brendenlake/omniglot (folder python/) and unzip both into {folder}, "
    "so that the images are at {folder}/images_background/<alphabet>/<character>/*.png "
    "and {folder}/images_evaluation/<alphabet>/<character>/*.png.")


def _unzipped_omniglot(root: str, background: bool):
    """torchvision's Omniglot, satisfied by the unzipped folders.

    torchvision checks the md5 of the .zip files before it reads anything; the
    course only needs the unzipped images (the zips may have been deleted).
    torchvision is imported here, when Omniglot is loaded, not with the package.
    """
    from torchvision.datasets import Omniglot

    class UnzippedOmniglot(Omniglot):
        def _check_integrity(self) -> bool:
            return os.path.isdir(os.path.join(self.root, self._get_target_folder()))

    return UnzippedOmniglot(root, background=background, download=False)


def load_omniglot(root: str | os.PathLike, split: str = "train", image_size: int = 28,
                  val_alphabets: tuple[str, ...] = VAL_ALPHABETS) -> ImageSet:
    """One meta-split of Omniglot as an ImageSet of uint8 [n, 1, image_size, image_size].

    root: the folder that holds `omniglot-py/` (torchvision's layout).
    Classes are "<alphabet>/<character>", alphabets sorted by name.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not isinstance(image_size, int) or image_size <= 0:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    folder = Path(root).expanduser().absolute() / FOLDER
    subset = "images_evaluation" if split == "test" else "images_background"
    if not (folder / subset).is_dir():
        zipped = folder / f"{subset}.zip"
        hint = f"{zipped} is there: unzip it in {folder}. " if zipped.is_file() else ""
        raise FileNotFoundError(f"Omniglot not found: {folder / subset} does not exist. "
                                + hint + HOW_TO_GET.format(folder=folder))

    data = _unzipped_omniglot(str(Path(root).expanduser().absolute()), background=(split != "test"))
    names = data._characters                              # "<alphabet>/<character>", t -> name
    if split != "test" and not any(n.split("/")[0] in val_alphabets for n in names):
        raise ValueError(f"none of the validation alphabets {list(val_alphabets)} is in "
                         f"{folder / subset}; pass val_alphabets= (--val-alphabets on the command line) names that are there")

    def in_split(name: str) -> bool:
        return split == "test" or (name.split("/")[0] in val_alphabets) == (split == "val")

    # torchvision lists folders in file-system order: sort, for the same classes everywhere
    characters = sorted(n for n in names if in_split(n))
    new_id = {names.index(n): j for j, n in enumerate(characters)}
    items = sorted(((new_id[t], file), i) for i, (file, t) in enumerate(data._flat_character_images)
                   if t in new_id)                       # ((class, file name), torchvision index)
    if not items:
        raise FileNotFoundError(f"no .png images under {folder / subset} for split {split!r}. "
                                + HOW_TO_GET.format(folder=folder))

    images = torch.empty(len(items), 1, image_size, image_size, dtype=torch.uint8)
    for row, (_, i) in enumerate(tqdm(items, desc=f"omniglot/{split}", unit="img", disable=None)):
        try:
            img, _ = data[i]                              # PIL, mode "L", white background
        except (OSError, ValueError, SyntaxError) as e:   # PIL's errors for a damaged or foreign file
            file, t = data._flat_character_images[i]
            raise ValueError(f"cannot read Omniglot image {Path(data.target_folder) / names[t] / file}: "
                             f"{type(e).__name__}: {e}") from None
        img = ImageOps.invert(img).resize((image_size, image_size), Image.BILINEAR)
        images[row, 0] = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(
            image_size, image_size)
    return ImageSet(
        images=images,
        targets=torch.tensor([t for (t, _), _ in items], dtype=torch.long),
        classes=characters,
        alphabets=[c.split("/")[0] for c in characters],
        name=f"omniglot/{split}")
