"""Handwritten digits: a second, meta-test-only domain (data/README.md, "Digits v1").

The 1,797 8x8 handwritten digits that scikit-learn bundles
(`sklearn.datasets.load_digits`: the test part of UCI "Optical Recognition of
Handwritten Digits", 13 writers, E. Alpaydin and C. Kaynak, 1998), brought to
the learner's 28x28x1 format like the glyphs: ink high, background 0, digit
about 18 px tall and centred. 10 classes ("0" ... "9"), 174 to 183 images
each.

A learner meta-trained on glyphs meets here handwriting instead of print, and
blocky, blurred 8x8 scans instead of anti-aliased type. Only a "test" split
exists: the digits are never meta-trained or meta-validated on.

The images are shipped in data/ (`digits-v1.npz` + a JSON manifest with the
provenance, the transform and the sha256 of every array); `load_digits` reads
them and checks the checksums. scikit-learn is not needed:
`python -m metalstm.tools.build_digits --source PATH` rebuilds the file from
scikit-learn's `digits.csv.gz` and says whether it is byte-identical.
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
SPLIT = "test"                       # the only split: an out-of-domain meta-test set
CLASSES = [str(d) for d in range(10)]
ARRAYS = ("images", "labels", "images8x8")
FIX = ("restore it from git (git checkout -- data/digits-v1.npz data/digits-v1.json) or "
       "re-create it with `python -m metalstm.tools.build_digits --source PATH --write` "
       "(data/README.md says where digits.csv.gz comes from)")


def sha256(array: np.ndarray) -> str:
    """sha256 of an array's bytes (C order)."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def paths(data_dir: str | Path | None = None) -> tuple[Path, Path]:
    """(arrays file, manifest file) in data_dir (default: metalstm.paths.data_dir(), the
    folder of the glyphs: the checkout's data/, or $METALSTM_DATA for an installed package)."""
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    return data_dir / f"digits-{VERSION}.npz", data_dir / f"digits-{VERSION}.json"


def read(data_dir: str | Path | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """The shipped arrays {"images" uint8 [1797, 28, 28], "labels" uint8 [1797],
    "images8x8" uint8 [1797, 8, 8] (the source values 0..16)} and the manifest,
    every array checked against the sha256, dtype and shape the manifest gives."""
    npz, js = paths(data_dir)
    for path in (npz, js):
        if not path.exists():
            raise FileNotFoundError(f"digits data file {path} is missing; {FIX}")
    try:
        manifest = json.loads(js.read_text(encoding="utf-8"))
        expected = {name: (manifest["arrays"][name]["sha256"], tuple(manifest["arrays"][name]["shape"]))
                    for name in ARRAYS}
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"digits manifest {js} is damaged ({type(err).__name__}: {err}); {FIX}") from None
    try:
        with np.load(npz, allow_pickle=False) as z:
            arrays = {name: z[name] for name in ARRAYS}
    except Exception as err:  # zip / zlib / npy format errors, a missing array: all mean "damaged"
        raise ValueError(f"digits data file {npz} is damaged ({type(err).__name__}: {err}); "
                         f"{FIX}") from None
    for name, (digest, shape) in expected.items():
        a = arrays[name]
        if a.dtype != np.uint8 or a.shape != shape or sha256(a) != digest:
            raise ValueError(
                f"digits data file {npz} is damaged: array {name!r} has sha256 {sha256(a)[:12]}..., "
                f"{a.dtype} {a.shape} but the manifest {js.name} expects {digest[:12]}..., "
                f"uint8 {shape}; {FIX}")
    return arrays, manifest


def load_digits(split: str = "test", data_dir: str | Path | None = None) -> ImageSet:
    """The handwritten digits as an ImageSet [1797, 1, 28, 28] uint8 of 10 classes "0".."9".

    Only split="test" exists: the digits are an out-of-domain meta-test set for
    learners meta-trained on glyphs; "train" and "val" are refused.
    """
    if split != SPLIT:
        raise ValueError(
            f"the handwritten digits are a meta-test-only domain: there is no {split!r} split, "
            f"only 'test' (meta-train and meta-validate on 'glyphs', then evaluate on "
            f"load_dataset('digits', 'test'))")
    arrays, _ = read(data_dir)
    images = torch.from_numpy(arrays["images"]).unsqueeze(1)
    return ImageSet(images=images, targets=torch.from_numpy(arrays["labels"].astype(np.int64)),
                    classes=list(CLASSES), alphabets=None, name=f"digits/{split}")
