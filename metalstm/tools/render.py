"""Drawing the glyph data set: fonts -> clean glyphs -> 20 jittered "drawers".

Every glyph is drawn by FreeType (through matplotlib's `FT2Font`, the copy of
FreeType that matplotlib ships) from the DejaVu fonts in matplotlib's
`mpl-data/fonts/ttf`, at SUPERSAMPLE times the final resolution. All the
geometry below happens at that high resolution and the result is averaged
down to 28x28, so edges stay anti-aliased instead of jagged.

1. `render_clean`: one glyph per (code point, style), cropped to its ink,
   centred by its bounding box on a 112x112 canvas (ink = 255, background 0).
2. `jitter`: 20 images per class (Omniglot has 20 drawers): the 12 styles
   plus 8 repeated ones, each with a stroke-width change (dilation or
   erosion = max- or min-pooling) and a random affine map (rotation, scale, shear,
   shift), drawn from a generator seeded by (seed, code point) alone, so any
   subset of classes renders to exactly the same bytes as the full set.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.ft2font import FT2Font, LoadFlags
from tqdm import tqdm

FONT_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
STYLES = (  # the 12 DejaVu faces matplotlib ships (Display faces are tiny subsets)
    "DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique",
    "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic", "DejaVuSerif-BoldItalic",
    "DejaVuSansMono", "DejaVuSansMono-Bold", "DejaVuSansMono-Oblique", "DejaVuSansMono-BoldOblique",
)
# drawer d of a class uses style DRAWER_STYLES[d]: all 12 once, then 8 again (new jitter)
DRAWER_STYLES = tuple(range(12)) + (0, 4, 8, 1, 6, 2, 5, 9)

SIZE = 28              # final image side (pixels)
SUPERSAMPLE = 4        # drawing resolution = SIZE * SUPERSAMPLE
EM = 22.0              # font size: 1 em = 22 final pixels (capital letters ~16 px tall)
MAX_BOX = 24.0         # larger glyphs are drawn smaller so that they fit in 24x24

JITTER = dict(         # uniform ranges of the per-image random changes (tuned in data/README.md)
    rotation_deg=15.0,     # rotation in [-15, 15] degrees
    scale=(0.85, 1.1),     # isotropic scale
    shear=0.2,             # horizontal shear factor in [-0.2, 0.2]
    shift_px=1.0,          # translation in [-1, 1] final pixels, x and y
    stroke=(-1, 2),        # stroke radius change in high-res pixels, an integer in [-1, 2]
)


def progress_bar(iterable, desc: str, show: bool):
    """A tqdm bar when asked for (TQDM_DISABLE=1 still silences it), else the plain iterable."""
    return tqdm(iterable, desc=desc) if show else iterable


def font_path(style: str) -> Path:
    path = FONT_DIR / f"{style}.ttf"
    if not path.exists():
        raise FileNotFoundError(f"font {path} not found: is matplotlib installed completely?")
    return path


def charmap(style: str) -> dict[int, int]:
    """{code point: glyph index} of one font (glyph index 0 would be .notdef)."""
    return FT2Font(str(font_path(style))).get_charmap()


def _draw(font: FT2Font, char: str, size_px: float) -> np.ndarray:
    """FreeType's anti-aliased bitmap of one character, cropped to its ink."""
    font.set_size(size_px, 72)                      # 72 dpi: points = pixels
    font.set_text(char, flags=LoadFlags.NO_HINTING)  # exact outlines, no grid fitting
    font.draw_glyphs_to_bitmap(antialiased=True)
    img = np.asarray(font.get_image())
    rows, cols = np.nonzero(img.any(axis=1))[0], np.nonzero(img.any(axis=0))[0]
    if len(rows) == 0:
        return np.zeros((0, 0), np.uint8)
    return img[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]


def render_clean(code_points: list[int], styles: tuple[str, ...] = STYLES) -> np.ndarray:
    """Clean high-res glyphs, uint8 [len(code_points), len(styles), 112, 112].

    Size: EM pixels per em (scaled by SUPERSAMPLE); a glyph whose ink is larger
    than MAX_BOX in either direction is drawn again, smaller, to fit. The ink's
    bounding box is centred on the canvas. A code point a font cannot draw
    (not in its charmap) or draws without ink stays blank (all zeros).
    """
    side = SIZE * SUPERSAMPLE
    out = np.zeros((len(code_points), len(styles), side, side), np.uint8)
    for s, style in enumerate(styles):
        font = FT2Font(str(font_path(style)))
        cmap = font.get_charmap()
        for i, cp in enumerate(code_points):
            if cmap.get(cp, 0) == 0:
                continue
            size = EM * SUPERSAMPLE
            img = _draw(font, chr(cp), size)
            box = MAX_BOX * SUPERSAMPLE
            while max(img.shape) > box:                 # too large: shrink to fit
                size *= box / max(img.shape) * 0.99
                img = _draw(font, chr(cp), size)
            h, w = img.shape
            top, left = (side - h) // 2, (side - w) // 2
            out[i, s, top: top + h, left: left + w] = img
    return out


def downsample(hires: np.ndarray | torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Mean of each 4x4 block: [..., 112, 112] -> float64 [..., 28, 28] (values 0..255)."""
    x = torch.as_tensor(hires)
    out = torch.empty(*x.shape[:-2], SIZE, SIZE, dtype=torch.float64)
    flat_in, flat_out = x.reshape(-1, 1, *x.shape[-2:]), out.view(-1, 1, SIZE, SIZE)
    for i in range(0, len(flat_in), chunk):                  # in chunks: float64 is 8x uint8
        flat_out[i: i + chunk] = F.avg_pool2d(flat_in[i: i + chunk].to(torch.float64), SUPERSAMPLE)
    return out


def jitter_params(code_point: int, seed: int, n: int = len(DRAWER_STYLES),
                  ranges: dict = JITTER) -> dict[str, torch.Tensor]:
    """The random changes of the n images of one class (generator seeded by seed, code point)."""
    g = torch.Generator().manual_seed(seed * 0x110000 + code_point)  # 0x110000 code points exist
    u = torch.rand(6, n, generator=g, dtype=torch.float64)          # uniform [0, 1)
    lo, hi = ranges["scale"]
    s_lo, s_hi = ranges["stroke"]
    return dict(
        angle=(2 * u[0] - 1) * math.radians(ranges["rotation_deg"]),
        scale=lo + (hi - lo) * u[1],
        shear=(2 * u[2] - 1) * ranges["shear"],
        shift=(2 * u[3:5].T - 1) * ranges["shift_px"],                 # [n, 2] (x, y)
        stroke=(s_lo + (u[5] * (s_hi - s_lo + 1)).floor()).long(),     # integers in [lo, hi]
    )


def affine_theta(angle: torch.Tensor, scale: torch.Tensor, shear: torch.Tensor,
                 shift: torch.Tensor) -> torch.Tensor:
    """`affine_grid` matrices [n, 2, 3]: output point -> input point (the jitter inverted).

    Jitter: p_out = scale * R(angle) @ Shear(shear) @ p_in + shift, in coordinates
    normalised to [-1, 1] (a shift of 2 px is 2 * 2/28). Inverted in closed form,
    p_in = Shear(-shear) @ R(-angle) @ (p_out - shift) / scale, so that no
    linear-algebra library can change the numbers.
    """
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    a, b = cos + shear * sin, sin - shear * cos        # first row of Shear(-h) @ R(-a) / s
    c, d = -sin, cos                                   # second row
    tx, ty = shift[:, 0] * (2.0 / SIZE), shift[:, 1] * (2.0 / SIZE)
    return torch.stack([torch.stack([a, b, -(a * tx + b * ty)], -1),
                        torch.stack([c, d, -(c * tx + d * ty)], -1)], -2)


def thin(x: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """Erosion: a (2r+1)x(2r+1) min-pool of images x float [n, 1, H, W]."""
    return -F.max_pool2d(-x, 2 * radius + 1, stride=1, padding=radius)


def thickness(clean: np.ndarray, chunk: int = 512) -> torch.Tensor:
    """Share of the ink left after thinning by 1 high-res pixel, per image of clean [..., H, W].

    About 0.7 for ordinary strokes, near 0 for hairlines (which thinning erases).
    """
    x = torch.as_tensor(clean)
    flat = x.reshape(-1, 1, *x.shape[-2:])
    share = torch.empty(len(flat), dtype=torch.float64)
    for i in range(0, len(flat), chunk):
        part = flat[i: i + chunk].to(torch.float64)
        share[i: i + chunk] = thin(part).sum((1, 2, 3)) / part.sum((1, 2, 3)).clamp_min(1)
    return share.reshape(x.shape[:-2])


def change_stroke(x: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Thicken (radius > 0: dilation) or thin (radius < 0: erosion) strokes, per image.

    x float [n, 1, H, W]; dilation by r is a (2r+1)x(2r+1) max-pool, erosion a
    min-pool. A glyph that erosion would leave with less than half of its ink
    (thin strokes) keeps its strokes unchanged.
    """
    out = x.clone()
    for r in radius.unique().tolist():
        if r == 0:
            continue
        idx = torch.nonzero(radius == r).flatten()
        if r > 0:
            out[idx] = F.max_pool2d(x[idx], 2 * r + 1, stride=1, padding=r)
        else:
            thinner = thin(x[idx], -r)
            enough = thinner.sum((1, 2, 3)) >= 0.5 * x[idx].sum((1, 2, 3))
            out[idx] = torch.where(enough[:, None, None, None], thinner, x[idx])
    return out


def jitter(clean: np.ndarray, code_points: list[int], seed: int = 0,
           ranges: dict = JITTER, chunk: int = 16, progress: bool = False) -> np.ndarray:
    """The 20 drawers of every class, uint8 [n_classes, 20, 28, 28].

    clean: `render_clean` output [n_classes, 12, 112, 112] for `code_points`;
    ranges: the jitter ranges (JITTER). Computed in float64: rounding errors stay
    far below the uint8 step, so other machines get the same bytes.
    """
    n_draw = len(DRAWER_STYLES)
    out = np.zeros((len(code_points), n_draw, SIZE, SIZE), np.uint8)
    styles = torch.tensor(DRAWER_STYLES)
    for start in progress_bar(range(0, len(code_points), chunk), "jitter", progress):
        cps = code_points[start: start + chunk]
        params = [jitter_params(cp, seed, n_draw, ranges) for cp in cps]
        p = {k: torch.cat([q[k] for q in params]) for k in params[0]}
        x = torch.as_tensor(clean[start: start + len(cps)])[:, styles]   # [c, 20, H, W]
        x = x.reshape(-1, 1, *x.shape[-2:]).to(torch.float64)
        x = change_stroke(x, p["stroke"])
        theta = affine_theta(p["angle"], p["scale"], p["shear"], p["shift"])
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        x = downsample(x).round().clamp(0, 255).to(torch.uint8)
        out[start: start + len(cps)] = x.reshape(len(cps), n_draw, SIZE, SIZE).numpy()
    return out
