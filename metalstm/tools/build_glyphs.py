"""Building the glyph data set from the fonts (data/README.md): a tool, not course material.

The course only reads the shipped files (`metalstm.data.glyphs.load_glyphs`);
this module is how they were made and how to check them:

1. selection: which code points become classes (`select_classes`), which
   alphabet each belongs to and which meta-split each alphabet is in;
2. drawing: `metalstm.tools.render` (fonts -> clean glyphs -> 20 jittered drawers);
3. the files: `build` returns the arrays and the manifest, `write` writes them;
4. statistics: classes per split and alphabet, a picture of the data set, and
   the pixel nearest-neighbour baseline that says how hard the episodes are.

    python -m metalstm.tools.build_glyphs --stats
    python -m metalstm.tools.build_glyphs --nn-baseline --episodes 600 --seed 0 --shot 1
    python -m metalstm.tools.build_glyphs --render [--write]
    python -m metalstm.tools.build_glyphs --sample-grid data/glyphs-sample.png
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import unicodedata
import zipfile
from pathlib import Path

import matplotlib
import numpy as np
import torch

from metalstm.checkpoint import atomic_write
from metalstm.cli import check_png, positive_int, save_png, seed_int
from metalstm.data.base import ImageSet
from metalstm.data.glyphs import SPLIT_NAMES, VERSION, load_glyphs, paths, read, sha256, split_table
from metalstm.episodes import EpisodeSampler
from metalstm.tools import render

SEED = 0                 # seed of the jitter (render.jitter_params)

# -- which code points become classes ---------------------------------------------
CATEGORIES = ("Lu", "Ll", "Lt", "Lo", "Nd", "Sm", "Sc", "So")  # letters, digits, symbols
MIN_EXTENT = 9           # drop glyphs whose ink spans < 9 px (median over the 12 styles)
MIN_THICKNESS = 0.1      # drop hairline glyphs: thinning by 1 high-res px leaves < 10% of the ink
DEDUP_COSINE = 0.98      # drop a class whose mean clean image has cosine > 0.98 with a kept one

# An alphabet is a Unicode block, or a few related blocks; code points in no
# listed range (block elements, specials, ...) are not used. (name, first, last)
ALPHABET_RANGES = (
    ("Basic Latin", 0x0000, 0x007F),
    ("Latin-1 Supplement", 0x0080, 0x00FF),
    ("Latin Extended-A", 0x0100, 0x017F),
    ("Latin Extended-B", 0x0180, 0x024F),
    ("IPA Extensions", 0x0250, 0x02AF),
    ("Greek and Coptic", 0x0370, 0x03FF),
    ("Cyrillic", 0x0400, 0x052F),                  # with Cyrillic Supplement
    ("Armenian", 0x0530, 0x058F),
    ("Currency Symbols", 0x0E3F, 0x0E3F),          # the Thai baht sign
    ("Georgian", 0x10A0, 0x10FF),
    ("Latin Extended (other)", 0x1D00, 0x1EFF),    # phonetic extensions, Latin Ext. Additional
    ("Currency Symbols", 0x20A0, 0x20CF),
    ("Arrows", 0x2190, 0x21FF),
    ("Mathematical Operators", 0x2200, 0x22FF),
    ("Miscellaneous Technical", 0x2300, 0x243F),   # with Control Pictures
    ("Box Drawing", 0x2500, 0x257F),
    ("Geometric Shapes", 0x25A0, 0x25FF),
    ("Miscellaneous Symbols", 0x2600, 0x26FF),
    ("Mathematical Operators", 0x27C0, 0x27EF),    # Misc. Mathematical Symbols-A
    ("Arrows", 0x27F0, 0x27FF),                    # Supplemental Arrows-A
    ("Mathematical Operators", 0x2980, 0x2AFF),    # Misc. Math Symbols-B, Suppl. Math Operators
    ("Arrows", 0x2B00, 0x2B0F),                    # Misc. Symbols and Arrows (arrows)
    ("Geometric Shapes", 0x2B10, 0x2B1F),          # Misc. Symbols and Arrows (shapes)
    ("Latin Extended (other)", 0x2C60, 0x2C7F),    # Latin Extended-C
    ("Latin Extended (other)", 0xA720, 0xA7FF),    # Latin Extended-D
)

# The fixed split, by alphabet (about 66% / 13% / 21% of the classes).
ALPHABET_SPLITS = {
    "Basic Latin": "train", "Latin Extended-B": "train", "IPA Extensions": "train",
    "Cyrillic": "train", "Arrows": "train", "Box Drawing": "train", "Geometric Shapes": "train",
    "Latin-1 Supplement": "val", "Latin Extended-A": "val", "Latin Extended (other)": "val",
    "Georgian": "val", "Miscellaneous Technical": "val",
    "Greek and Coptic": "test", "Armenian": "test", "Mathematical Operators": "test",
    "Currency Symbols": "test", "Miscellaneous Symbols": "test",
}


def alphabet_of(code_point: int) -> str | None:
    """The alphabet (ALPHABET_RANGES) of a code point, None if it is not used."""
    for name, first, last in ALPHABET_RANGES:
        if first <= code_point <= last:
            return name
    return None


def class_name(code_point: int) -> str:
    """E.g. 'U+0416 Ж CYRILLIC CAPITAL LETTER ZHE'."""
    return f"U+{code_point:04X} {chr(code_point)} {unicodedata.name(chr(code_point), '?')}"


# -- selection ------------------------------------------------------------------
def candidate_code_points() -> list[int]:
    """Code points every DejaVu style maps to a real glyph, in a listed alphabet,
    of a kept category, and without a Unicode decomposition (no accented copies)."""
    common = None
    for style in render.STYLES:
        cmap = {cp for cp, glyph in render.charmap(style).items() if glyph != 0}  # 0 = .notdef
        common = cmap if common is None else common & cmap
    return [cp for cp in sorted(common)
            if unicodedata.category(chr(cp)) in CATEGORIES
            and not unicodedata.decomposition(chr(cp))
            and alphabet_of(cp) is not None]


def ink_extent(images: torch.Tensor, threshold: float = 16.0) -> torch.Tensor:
    """Largest side of the ink's bounding box, in pixels, of images [..., H, W] (0..255)."""
    ink = images > threshold
    pos = torch.arange(images.shape[-1])

    def span(mask: torch.Tensor) -> torch.Tensor:
        first = torch.where(mask, pos, images.shape[-1]).min(-1).values
        last = torch.where(mask, pos, -1).max(-1).values
        return (last - first + 1).clamp(min=0)

    return torch.maximum(span(ink.any(-1)), span(ink.any(-2)))


def select_classes() -> tuple[list[int], np.ndarray, dict]:
    """The classes of the data set: (code points, their clean renders, counts of each step).

    Steps: candidates -> drop blank glyphs (a style without ink) -> drop tiny
    glyphs (MIN_EXTENT) -> drop hairline glyphs (MIN_THICKNESS: jitter would
    erase them, e.g. the white card suits) -> drop near-duplicates: in code point order, keep a
    glyph only if its mean clean image (over the 12 styles, 28x28) has cosine
    similarity <= DEDUP_COSINE with every glyph kept so far (Greek Alpha and
    Cyrillic A go, Latin A stays).
    """
    cps = candidate_code_points()
    clean = render.render_clean(cps)                       # [n, 12, 112, 112]
    small = render.downsample(clean)                       # [n, 12, 28, 28] float64
    counts = {"candidates": len(cps)}
    blank = (small.flatten(2).sum(-1) == 0).any(1)
    tiny = (ink_extent(small).double().median(1).values < MIN_EXTENT) & ~blank
    hairline = (render.thickness(clean).min(1).values < MIN_THICKNESS) & ~blank & ~tiny
    keep = torch.nonzero(~blank & ~tiny & ~hairline).flatten()
    counts.update(blank=int(blank.sum()), tiny=int(tiny.sum()), hairline=int(hairline.sum()))
    mean = small[keep].mean(1).flatten(1)
    mean = mean / mean.norm(dim=1, keepdim=True)
    cosine = mean @ mean.T
    kept: list[int] = []
    for j in range(len(keep)):
        if not kept or cosine[j, kept].max() <= DEDUP_COSINE:
            kept.append(j)
    counts["near_duplicates"] = len(keep) - len(kept)
    rows = keep[kept].tolist()
    counts["classes"] = len(rows)
    return [cps[i] for i in rows], clean[rows], counts


def render_images(code_points: list[int], seed: int = SEED) -> np.ndarray:
    """The 20 images of each given class, uint8 [n, 20, 28, 28]; any subset of the
    classes gives exactly the rows the full data set has for them."""
    return render.jitter(render.render_clean(code_points), code_points, seed)


def build(progress: bool = True) -> tuple[np.ndarray, dict]:
    """Render the whole data set from the fonts: (images uint8 [classes, 20, 28, 28], manifest)."""
    cps, clean, counts = select_classes()
    images = render.jitter(clean, cps, SEED, progress=progress)
    return images, make_manifest(cps, counts, images)


def make_manifest(code_points: list[int], counts: dict, images: np.ndarray) -> dict:
    """The manifest of a data set of these classes (select_classes' code points and counts)
    and images: each class's name, alphabet and split, the render settings, the checksum."""
    classes = [dict(code_point=f"U+{cp:04X}", name=class_name(cp), alphabet=alphabet_of(cp),
                    split=ALPHABET_SPLITS[alphabet_of(cp)]) for cp in code_points]
    return dict(
        name=f"glyphs-{VERSION}",
        description="Unicode characters in 12 DejaVu styles, 20 jittered 28x28 images each "
                    "(see data/README.md)",
        images_file=f"glyphs-{VERSION}.npz",
        shape=list(images.shape), dtype="uint8",
        sha256=sha256(images),
        render=dict(fonts=list(render.STYLES), drawer_styles=list(render.DRAWER_STYLES),
                    size=render.SIZE, supersample=render.SUPERSAMPLE, em_px=render.EM,
                    max_box_px=render.MAX_BOX, jitter=render.JITTER, seed=SEED,
                    categories=list(CATEGORIES), min_extent_px=MIN_EXTENT,
                    min_thickness=MIN_THICKNESS, dedup_cosine=DEDUP_COSINE),
        selection=counts,
        software=software_versions(),
        classes=classes,
    )


def software_versions() -> dict:
    """What the rendered bytes depend on: fonts, FreeType, matplotlib, torch, numpy, Unicode."""
    from matplotlib import ft2font
    names = ft2font.FT2Font(str(render.font_path(render.STYLES[0]))).get_sfnt()
    dejavu = names.get((3, 1, 0x409, 5), b"").decode("utf-16-be")   # name id 5: "Version 2.35"
    return dict(dejavu=dejavu, matplotlib=matplotlib.__version__,
                freetype=ft2font.__freetype_version__, torch=torch.__version__.split("+")[0],
                numpy=np.__version__, unicodedata=unicodedata.unidata_version)


# -- the files ------------------------------------------------------------------
def write(images: np.ndarray, manifest: dict, data_dir: str | Path | None = None) -> None:
    """Write the arrays (.npz) and the manifest (.json), each atomically (never half a file)."""
    npz, js = paths(data_dir)
    array = io.BytesIO()
    np.lib.format.write_array(array, np.ascontiguousarray(images))
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:     # a fixed date: the same arrays give the same file
        z.writestr(zipfile.ZipInfo("images.npy", date_time=(1980, 1, 1, 0, 0, 0)),
                   array.getvalue(), compress_type=zipfile.ZIP_DEFLATED)
    text = json.dumps(manifest, indent=1, ensure_ascii=False) + "\n"
    for path, data in ((npz, zipped.getvalue()), (js, text.encode("utf-8"))):
        atomic_write(path, data)



# -- statistics -----------------------------------------------------------------
def pixel_nn_accuracy(dataset: ImageSet, n_way: int = 5, k_shot: int = 1, episodes: int = 600,
                      seed: int = 0, n_query: int = 15, metric: str = "euclidean",
                      progress: bool = False) -> tuple[float, float]:
    """Nearest neighbour on raw pixels over `episodes` episodes: (mean accuracy, 95% half-width).

    A query gets the label of its nearest support image (Euclidean distance, or
    cosine similarity); the interval is 1.96 * std / sqrt(episodes) (paper notes 5).
    """
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
    sampler = EpisodeSampler(dataset, n_way, k_shot, n_query, seed)
    acc = torch.zeros(episodes, dtype=torch.float64)
    for i in render.progress_bar(range(episodes), "pixel NN", progress):
        ep = sampler[i]
        s, q = ep.support_x.flatten(1), ep.query_x.flatten(1)
        if metric == "euclidean":
            nearest = torch.cdist(q, s).argmin(1)
        else:
            s = s / s.norm(dim=1, keepdim=True).clamp_min(1e-12)
            q = q / q.norm(dim=1, keepdim=True).clamp_min(1e-12)
            nearest = (q @ s.T).argmax(1)
        acc[i] = (ep.support_y[nearest] == ep.query_y).double().mean()
    half = 1.96 * acc.std().item() / episodes ** 0.5 if episodes > 1 else float("nan")
    return acc.mean().item(), half


def sample_grid(path: str | Path, data_dir: str | Path | None = None, seed: int = 0) -> Path:
    """Save a picture: one class from each alphabet (a seeded choice), its 20 images in a row."""
    import matplotlib.pyplot as plt
    images, manifest = read(data_dir)
    rng = np.random.default_rng(seed)
    rows = []
    for row in split_table(data_dir):
        ids = [i for i, c in enumerate(manifest["classes"]) if c["alphabet"] == row["alphabet"]]
        rows.append(ids[rng.integers(len(ids))])
    n, per = len(rows), images.shape[1]
    fig, axes = plt.subplots(n, 1, figsize=(per * 0.4, n * 0.45 + 0.3))
    for ax, i in zip(axes, rows):
        c = manifest["classes"][i]
        strip = images[i].transpose(1, 0, 2).reshape(render.SIZE, per * render.SIZE)
        ax.imshow(strip, cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
        ax.set_xticks([]), ax.set_yticks([])
        char = c["name"].split(" ")[1]
        ax.set_ylabel(f"{c['code_point']} {char}\n{c['alphabet']} ({c['split']})",
                      rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("glyphs: one class per alphabet, its 20 images (12 DejaVu styles + 8 repeats, "
                 "jittered)", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    try:
        save_png(fig, path, dpi=80, bbox_inches="tight", pad_inches=0.05)
    finally:
        plt.close(fig)
    return path


# -- command line -------------------------------------------------------------------
def _stats() -> None:
    table = split_table()
    total = sum(r["classes"] for r in table)
    print(f"{'alphabet':28s} {'split':6s} {'classes':>7s} {'images':>7s}")
    for r in table:
        print(f"{r['alphabet']:28s} {r['split']:6s} {r['classes']:7d} {r['images']:7d}")
    print()
    for split in SPLIT_NAMES:
        rows = [r for r in table if r["split"] == split]
        n = sum(r["classes"] for r in rows)
        print(f"{split:6s} {len(rows):3d} alphabets {n:5d} classes ({100 * n / total:4.1f}%) "
              f"{20 * n:6d} images")
    print(f"all    {len(table):3d} alphabets {total:5d} classes          {20 * total:6d} images")


def _render(write_files: bool) -> int:
    images, manifest = build()
    npz, js = paths()
    if write_files:
        write(images, manifest)
        print(f"wrote {npz} ({npz.stat().st_size / 1e6:.2f} MB) and {js}: "
              f"{images.shape[0]} classes, sha256 {manifest['sha256']}")
        return 0
    try:
        _, shipped = read()
    except (FileNotFoundError, ValueError) as err:
        print(f"cannot compare with the shipped file: {err}")
        return 1
    same_classes = [c["code_point"] for c in manifest["classes"]] == \
                   [c["code_point"] for c in shipped["classes"]]
    print(f"rendered {images.shape[0]} classes (shipped: {len(shipped['classes'])}), "
          f"sha256 {manifest['sha256']}")
    if manifest["sha256"] == shipped["sha256"]:
        print("byte-identical to the shipped arrays")
        return 0
    print("DIFFERENT from the shipped arrays" +
          ("" if same_classes else " (even the selected classes differ)") +
          f"\n  this rendering: {manifest['software']}\n  shipped with:   {shipped['software']}\n"
          "The shipped file is what load_glyphs uses; `--render --write` would replace it.")
    return 1


def pixel_nn_report(load, args) -> int:
    """Print the pixel nearest-neighbour line for the data set `load()` gives (the --nn-baseline of
    this command and of build_digits): 0, or one error line and 2 (e.g. --way 500)."""
    try:
        data = load()
        mean, half = pixel_nn_accuracy(data, args.way, args.shot, args.episodes, args.seed,
                                       metric=args.metric, progress=True)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"pixel nearest neighbour ({args.metric}), {data.name}, {args.way}-way "
          f"{args.shot}-shot, 15 queries, {args.episodes} episodes, seed {args.seed}: "
          f"{100 * mean:.2f} +- {100 * half:.2f} %")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m metalstm.tools.build_glyphs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stats", action="store_true", help="classes per split and alphabet")
    parser.add_argument("--nn-baseline", action="store_true",
                        help="pixel nearest-neighbour accuracy on meta-test episodes")
    parser.add_argument("--episodes", type=positive_int, default=600)
    parser.add_argument("--seed", type=seed_int, default=0)
    parser.add_argument("--way", type=positive_int, default=5)
    parser.add_argument("--shot", type=positive_int, default=1)
    parser.add_argument("--split", default="test", choices=SPLIT_NAMES + ("all",))
    parser.add_argument("--metric", default="euclidean", choices=("euclidean", "cosine"))
    parser.add_argument("--render", action="store_true",
                        help="draw everything again from the fonts, compare with the shipped file")
    parser.add_argument("--write", action="store_true",
                        help="with --render: rewrite the shipped files")
    parser.add_argument("--sample-grid", metavar="PATH", help="save a picture of the data set")
    args = parser.parse_args(argv)
    if args.write and not args.render:
        parser.error("--write needs --render")
    if not (args.stats or args.nn_baseline or args.render or args.sample_grid):
        parser.print_help()
        return 0
    try:
        check_png(args.sample_grid, "--sample-grid")       # before the work, not after it
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    status = 0
    if args.render:
        status = _render(args.write)
    if args.stats:
        _stats()
    if args.nn_baseline and pixel_nn_report(lambda: load_glyphs(args.split), args) != 0:
        return 2
    if args.sample_grid and write_sample_grid(sample_grid, args.sample_grid) != 0:
        return 2
    return status


def write_sample_grid(make, path) -> int:
    """--sample-grid of build_glyphs and build_digits: make(path) writes the picture; 0, or one error
    line and 2 (an existing file is left as it was)."""
    try:
        print(f"wrote {make(path)}")
    except OSError as exc:
        print(f"error: could not write --sample-grid {path} ({exc.strerror or exc})"
              + ("; the previous file is unchanged" if Path(path).exists() else ""), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
