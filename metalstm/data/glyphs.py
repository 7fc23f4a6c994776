"""The embedded glyph data set: an Omniglot-like benchmark made from fonts (data/README.md).

A class is one Unicode character, an "alphabet" its script or Unicode block,
and each class has 20 images of 28x28 gray pixels (ink high, background 0):
the 12 DejaVu styles matplotlib ships plus 8 repeats, each with its own seeded
jitter. Meta-train / meta-val / meta-test are split by alphabet, with a fixed
list of alphabets per split (paper notes 1: disjoint classes), like Omniglot's
background / evaluation alphabets.

The rendered arrays are shipped in data/ (`glyphs-v1.npz` + a JSON manifest
with the class list, the split of every class, the render parameters and the
sha256 of the arrays). `load_glyphs` reads them and checks the checksum.
How they were made (class selection, drawing, the manifest) is a tool beside
the course: `python -m metalstm.tools.build_glyphs --render` draws everything
again from the fonts and says whether the result is byte-identical.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from metalstm.data.base import ImageSet
from metalstm.paths import data_dir as default_data_dir

VERSION = "v1"
SPLIT_NAMES = ("train", "val", "test")


# -- the shipped files ------------------------------------------------------------
def sha256(images: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()


def paths(data_dir: str | Path | None = None) -> tuple[Path, Path]:
    """(arrays file, manifest file) in data_dir (default: metalstm.paths.data_dir())."""
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    return data_dir / f"glyphs-{VERSION}.npz", data_dir / f"glyphs-{VERSION}.json"


def read(data_dir: str | Path | None = None) -> tuple[np.ndarray, dict]:
    """The shipped (images uint8 [classes, 20, 28, 28], manifest), checksum verified."""
    npz, js = paths(data_dir)
    for path in (npz, js):
        if not path.exists():
            raise FileNotFoundError(
                f"glyph data file {path} is missing; restore it from git or re-create it with "
                f"`python -m metalstm.tools.build_glyphs --render --write`")
    fix = ("restore it from git (git checkout -- data/) or re-create it with "
           "`python -m metalstm.tools.build_glyphs --render --write`")
    try:
        manifest = json.loads(js.read_text(encoding="utf-8"))
        expected, shape = manifest["sha256"], tuple(manifest["shape"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"glyph manifest {js} is damaged ({err}); {fix}") from None
    try:
        with np.load(npz, allow_pickle=False) as z:
            images = z["images"]
    except Exception as err:  # zip / zlib / npy format errors: all mean "damaged"
        raise ValueError(f"glyph data file {npz} is damaged ({type(err).__name__}: {err}); "
                         f"{fix}") from None
    actual = sha256(images)
    if images.dtype != np.uint8 or images.shape != shape or actual != expected:
        raise ValueError(
            f"glyph data file {npz} is damaged: sha256 {actual[:12]}..., shape {images.shape} "
            f"but the manifest {js.name} expects {expected[:12]}..., shape {shape}; {fix}")
    return images, manifest


# -- public API -------------------------------------------------------------------
def load_glyphs(split: str = "train", data_dir: str | Path | None = None) -> ImageSet:
    """The glyph meta-split "train", "val", "test" (or "all") as an ImageSet [n, 1, 28, 28].

    Classes are named like 'U+0416 Ж CYRILLIC CAPITAL LETTER ZHE' and numbered
    in code point order within the split; 20 images per class.
    """
    if split not in SPLIT_NAMES + ("all",):
        raise ValueError(f"unknown glyph split {split!r}: choose one of "
                         f"{', '.join(map(repr, SPLIT_NAMES + ('all',)))}")
    images, manifest = read(data_dir)
    ids = [i for i, c in enumerate(manifest["classes"]) if split in ("all", c["split"])]
    x = torch.from_numpy(images[ids]).reshape(-1, 1, *images.shape[-2:])
    per_class = images.shape[1]
    return ImageSet(
        images=x, targets=torch.arange(len(ids)).repeat_interleave(per_class),
        classes=[manifest["classes"][i]["name"] for i in ids],
        alphabets=[manifest["classes"][i]["alphabet"] for i in ids],
        name=f"glyphs/{split}")


def split_table(data_dir: str | Path | None = None) -> list[dict]:
    """One row per alphabet: {"alphabet", "split", "classes", "images"}, by split then size."""
    images, manifest = read(data_dir)
    rows: dict[str, dict] = {}
    for c in manifest["classes"]:
        row = rows.setdefault(c["alphabet"], dict(alphabet=c["alphabet"], split=c["split"],
                                                  classes=0, images=0))
        row["classes"] += 1
        row["images"] += images.shape[1]
    return sorted(rows.values(), key=lambda r: (SPLIT_NAMES.index(r["split"]), -r["classes"],
                                                r["alphabet"]))
