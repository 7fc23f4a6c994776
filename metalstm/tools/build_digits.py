"""Build data/digits-v1.npz (+ .json) from scikit-learn's digits.csv.gz (data/README.md, "Digits v1").

The source is the file scikit-learn bundles for `sklearn.datasets.load_digits`:
`sklearn/datasets/data/digits.csv.gz`, 1,797 rows of 64 pixel values (an 8x8
image, row by row, 0..16 = how many of the 16 pixels of a 4x4 block of the
32x32 scan are ink) and the digit 0..9. scikit-learn itself is not needed; get
the file from its wheel, e.g.

    pip download --no-deps -d /tmp/skl scikit-learn==1.9.1
    python -m metalstm.tools.build_digits --source /tmp/skl/scikit_learn-1.9.1-*.whl

`--source` takes the wheel, digits.csv.gz or digits.csv; without it, an
installed scikit-learn's copy is used if there is one. The command converts
and says whether the result is byte-identical to the shipped files;
`--write` replaces them.

The transform (`to_28x28`), chosen to match the glyphs (ink high on 0,
printed digits about 17 px tall and 13 px wide, centred in 28x28):
1. values 0..16 -> 0..255 linearly (v * 255 / 16);
2. the 8x8 image is the 16x16 square at rows and columns 6..21 of the 28x28
   canvas (2 canvas pixels per source cell), and each canvas pixel is the
   bilinear interpolation, at the pixel's centre, of the source values taken
   at the cell centres, with zeros outside the 8x8 frame (a ring of empty cells),
   so the ink fades out over one pixel instead of being cut at the frame;
3. rounding half up to uint8. Exact: the weights are quarters, so a pixel is an
   integer over 256 and nothing depends on floating point.

    python -m metalstm.tools.build_digits --source PATH [--write]
    python -m metalstm.tools.build_digits --nn-baseline --shot 1 --episodes 600 --threads 1
    python -m metalstm.tools.build_digits --sample-grid data/digits-sample.png
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

from metalstm.checkpoint import atomic_write
from metalstm.cli import check_png, positive_int, save_png, seed_int
from metalstm.data import digits

SIZE = 28                   # the learner's input, like the glyphs
SCALE = 2                   # canvas pixels per source cell: 8x8 -> 16x16
OFFSET = (SIZE - 8 * SCALE) // 2    # 6: the 16x16 square sits at rows / columns 6..21
CSV_MEMBER = "sklearn/datasets/data/digits.csv.gz"     # inside scikit-learn's wheel
# the decompressed CSV text of scikit-learn 1.9.1 (unchanged for years); a different one is refused
CSV_SHA256 = "6ebb3d2fee246a4e99363262ddf8a00a3c41bee6014c373ed9d9216ba7f651b8"
CSV_GZ_SHA256 = "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"  # as in 1.9.1


# -- the source --------------------------------------------------------------------
def installed_csv() -> Path | None:
    """digits.csv.gz of an installed scikit-learn (found without importing it), or None."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    return path if path.exists() else None


def read_csv_text(source: str | Path) -> str:
    """The CSV text from a scikit-learn wheel (.whl), digits.csv.gz or digits.csv."""
    source = Path(source)
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as z:
            data = gzip.decompress(z.read(CSV_MEMBER))
    elif source.suffix == ".gz":
        data = gzip.decompress(source.read_bytes())
    else:
        data = source.read_bytes()
    return data.decode("ascii")


def parse_csv(text: str) -> tuple[np.ndarray, np.ndarray]:
    """(images8x8 uint8 [n, 8, 8] with values 0..16, labels uint8 [n]) from the CSV text,
    in the file's order. The CSV must be the one scikit-learn 1.9.1 ships (CSV_SHA256)."""
    digest = hashlib.sha256(text.encode("ascii")).hexdigest()
    if digest != CSV_SHA256:
        raise ValueError(f"this digits CSV has sha256 {digest[:12]}..., not {CSV_SHA256[:12]}... "
                         f"(scikit-learn 1.9.1's sklearn/datasets/data/digits.csv.gz)")
    rows = np.array([[int(v) for v in line.split(",")] for line in text.splitlines() if line])
    if rows.shape[1] != 65 or rows[:, :64].min() < 0 or rows[:, :64].max() > 16 \
            or not set(rows[:, 64]) <= set(range(10)):
        raise ValueError(f"unexpected digits CSV: {rows.shape}, values {rows.min()}..{rows.max()}")
    return rows[:, :64].reshape(-1, 8, 8).astype(np.uint8), rows[:, 64].astype(np.uint8)


# -- the transform -----------------------------------------------------------------
def interpolation_weights() -> np.ndarray:
    """int64 [SIZE, 8]: 4 x the bilinear weight of source cell j for canvas pixel i.

    Canvas pixel i has its centre at source coordinate u = (i + 0.5 - OFFSET) / 2 - 0.5
    (cell centres at 0..7); it takes weight 1 - t from cell floor(u) and t from the next,
    t = u - floor(u) in {0.25, 0.75}; cells outside 0..7 are empty (value 0).
    """
    w = np.zeros((SIZE, 8), dtype=np.int64)
    for i in range(SIZE):
        u4 = 2 * (i - OFFSET) - 1          # 4u = (i + 0.5 - OFFSET) * 2 - 2, exactly
        lo, t4 = u4 // 4, u4 % 4           # floor(u) and 4t
        for j, wt in ((lo, 4 - t4), (lo + 1, t4)):
            if 0 <= j < 8:
                w[i, j] += wt
    return w


def to_28x28(images8x8: np.ndarray) -> np.ndarray:
    """uint8 [n, 28, 28] images from the 8x8 values 0..16 (module docstring: the transform)."""
    w = interpolation_weights()
    total = np.einsum("ri,nij,cj->nrc", w, images8x8.astype(np.int64), w)  # 16 x the interpolation
    # the pixel is total / 16 (weights) * 255 / 16 (values), rounded half up, exactly in integers
    return ((total * 255 + 128) // 256).astype(np.uint8)


# -- the shipped files -------------------------------------------------------------
def build(text: str) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, manifest) of the data set from the CSV text."""
    images8x8, labels = parse_csv(text)
    images = to_28x28(images8x8)
    arrays = dict(images=images, labels=labels, images8x8=images8x8)
    counts = np.bincount(labels, minlength=10)
    manifest = dict(
        name=f"digits-{digits.VERSION}",
        description="the 1,797 8x8 handwritten digits scikit-learn bundles (UCI optdigits, test "
                    "part), as 28x28 uint8 images; an out-of-domain meta-test set (data/README.md)",
        images_file=f"digits-{digits.VERSION}.npz",
        split=digits.SPLIT,
        classes=digits.CLASSES,
        images_per_class=counts.tolist(),
        arrays={name: dict(shape=list(a.shape), dtype="uint8", sha256=digits.sha256(a))
                for name, a in arrays.items()},
        source=dict(
            file=f"{CSV_MEMBER} of scikit-learn 1.9.1 (the data of sklearn.datasets.load_digits)",
            csv_gz_sha256=CSV_GZ_SHA256, csv_sha256=CSV_SHA256,
            origin="UCI Machine Learning Repository, Optical Recognition of Handwritten Digits "
                   "(dataset 80), file optdigits.tes: E. Alpaydin and C. Kaynak, Bogazici "
                   "University, 1998; 13 writers",
            order="the CSV's row order"),
        transform=dict(
            values="v * 255 / 16 (0..16 -> 0..255)",
            placement=f"the 8x8 image is the {8 * SCALE}x{8 * SCALE} square at rows and columns "
                      f"{OFFSET}..{OFFSET + 8 * SCALE - 1} of the {SIZE}x{SIZE} canvas",
            interpolation="bilinear at pixel centres (align_corners=False), zero outside the "
                          "8x8 frame; exact integer arithmetic, rounding half up",
            code="metalstm/tools/build_digits.py: to_28x28"),
        licence="scikit-learn: BSD-3-Clause (its COPYING); the data set: see data/README.md",
    )
    return arrays, manifest


def file_bytes(arrays: dict[str, np.ndarray], manifest: dict) -> tuple[bytes, bytes]:
    """The bytes of the .npz and the .json: the same arrays always give the same bytes
    (fixed zip dates and order)."""
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        for name in digits.ARRAYS:
            array = io.BytesIO()
            np.lib.format.write_array(array, np.ascontiguousarray(arrays[name]))
            z.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)),
                       array.getvalue(), compress_type=zipfile.ZIP_DEFLATED)
    text = json.dumps(manifest, indent=1, ensure_ascii=False) + "\n"
    return zipped.getvalue(), text.encode("utf-8")


def write(arrays: dict[str, np.ndarray], manifest: dict, data_dir: str | Path | None = None) -> None:
    """Write the .npz and the .json, each atomically (never half a file)."""
    for path, data in zip(digits.paths(data_dir), file_bytes(arrays, manifest)):
        atomic_write(path, data)


def sample_grid(path: str | Path, data_dir: str | Path | None = None, per_class: int = 12) -> Path:
    """Save a picture: for each digit, its first 8x8 source image, then its first
    `per_class` 28x28 images as the learner sees them (drawn like the glyph sample)."""
    import matplotlib.pyplot as plt
    arrays, _ = digits.read(data_dir)
    fig, axes = plt.subplots(10, 2, figsize=(0.4 * (per_class + 1.5), 10 * 0.45 + 0.4),
                             gridspec_kw=dict(width_ratios=[1, per_class]))
    for d in range(10):
        idx = np.flatnonzero(arrays["labels"] == d)[:per_class]
        src, strip = axes[d]
        src.imshow(arrays["images8x8"][idx[0]], cmap="gray_r", vmin=0, vmax=16,
                   interpolation="nearest")
        strip.imshow(arrays["images"][idx].transpose(1, 0, 2).reshape(SIZE, -1), cmap="gray_r",
                     vmin=0, vmax=255, interpolation="nearest")
        for ax in (src, strip):
            ax.set_xticks([]), ax.set_yticks([])
        src.set_ylabel(str(d), rotation=0, ha="right", va="center", fontsize=9)
    axes[0, 0].set_title("8x8", fontsize=8)
    axes[0, 1].set_title(f"the first {per_class} images of each class, 28x28", fontsize=8)
    fig.suptitle("digits: scikit-learn's 8x8 handwritten digits brought to 28x28", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    try:
        save_png(fig, path, dpi=80, bbox_inches="tight", pad_inches=0.05)
    finally:
        plt.close(fig)
    return path


# -- command line --------------------------------------------------------------------
def _convert(source: str | None, write_files: bool) -> int:
    given, source = source, source or installed_csv()
    if source is None:
        print("error: no source: give --source (a scikit-learn wheel, digits.csv.gz or digits.csv; "
              "data/README.md), or install scikit-learn", file=sys.stderr)
        return 2
    try:
        if not Path(source).is_file():
            raise ValueError("no such file" if not Path(source).exists() else "not a file")
        arrays, manifest = build(read_csv_text(source))
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        reason = {KeyError: f"the wheel has no {CSV_MEMBER}", UnicodeDecodeError: "not a text CSV"}.get(
            type(exc), (str(exc).splitlines() or [type(exc).__name__])[0][:160])
        print(f"error: {'--source ' if given else ''}{source}: {reason}; give a scikit-learn wheel, "
              f"digits.csv.gz or digits.csv (data/README.md){'; nothing was written' if write_files else ''}",
              file=sys.stderr)
        return 2
    npz, js = digits.paths()
    if write_files:
        write(arrays, manifest)
        print(f"wrote {npz} ({npz.stat().st_size / 1e3:.0f} kB) and {js}: "
              f"{len(arrays['labels'])} images, sha256 of the images "
              f"{manifest['arrays']['images']['sha256']}")
        return 0
    new = file_bytes(arrays, manifest)
    same = [p.exists() and p.read_bytes() == b for p, b in zip((npz, js), new)]
    print(f"converted {len(arrays['labels'])} images from {source}; sha256 of the images "
          f"{manifest['arrays']['images']['sha256']}")
    for path, ok in zip((npz, js), same):
        print(f"  {path.name}: {'byte-identical to the shipped file' if ok else 'DIFFERENT from the shipped file'}")
    return 0 if all(same) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m metalstm.tools.build_digits",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", metavar="PATH",
                        help="scikit-learn wheel, digits.csv.gz or digits.csv "
                             "(default: an installed scikit-learn's copy)")
    parser.add_argument("--convert", action="store_true",
                        help="convert and compare with the shipped files (implied by --source)")
    parser.add_argument("--write", action="store_true", help="replace the shipped files")
    parser.add_argument("--nn-baseline", action="store_true",
                        help="pixel nearest-neighbour accuracy on digit episodes")
    parser.add_argument("--episodes", type=positive_int, default=600)
    parser.add_argument("--seed", type=seed_int, default=0)
    parser.add_argument("--way", type=positive_int, default=5)
    parser.add_argument("--shot", type=positive_int, default=1)
    parser.add_argument("--metric", default="euclidean", choices=("euclidean", "cosine"))
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads (default 1)")
    parser.add_argument("--sample-grid", metavar="PATH", help="save a picture of the data set")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    convert = args.convert or args.source is not None or args.write
    if not (convert or args.nn_baseline or args.sample_grid):
        parser.print_help()
        return 0
    try:
        check_png(args.sample_grid, "--sample-grid")       # before the work, not after it
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    status = _convert(args.source, args.write) if convert else 0
    if args.nn_baseline:
        from metalstm.tools.build_glyphs import pixel_nn_report
        if pixel_nn_report(lambda: digits.load_digits("test"), args) != 0:
            return 2
    if args.sample_grid:
        from metalstm.tools.build_glyphs import write_sample_grid
        if write_sample_grid(sample_grid, args.sample_grid) != 0:
            return 2
    return status


if __name__ == "__main__":
    sys.exit(main())
