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
   erosion = max-pooling) and a random affine map (rotation, scale, shear,
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

JITTER = dict(         # uniform ranges of the per-image random changes
    rotation_deg=15.0,     # rotation in [-15, 15] degrees
    scale=(0.8, 1.1),      # isotropic scale
    shear=0.2,             # horizontal shear factor in [-0.2, 0.2]
    shift_px=2.0,          # translation in [-2, 2] final pixels, x and y
    stroke=(-1, 3),        # stroke radius change in high-res pixels (integers; <0 thins)
)


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


def downsample(hires: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Average SUPERSAMPLE x SUPERSAMPLE blocks: [..., 112, 112] -> float64 [..., 28, 28] in [0, 255]."""
    x = torch.as_tensor(hires, dtype=torch.float64)
    shape = x.shape[:-2]
    x = F.avg_pool2d(x.reshape(-1, 1, *x.shape[-2:]), SUPERSAMPLE)
    return x.reshape(*shape, SIZE, SIZE)


def jitter_params(code_point: int, seed: int, n: int = len(DRAWER_STYLES),
                  jitter: dict = JITTER) -> dict[str, torch.Tensor]:
    """The random changes of the n images of one class, from a generator seeded by (seed, code point)."""
    g = torch.Generator().manual_seed(seed * 0x110000 + code_point)  # 0x110000 code points exist
    u = torch.rand(6, n, generator=g, dtype=torch.float64)          # uniform [0, 1)
    lo, hi = jitter["scale"]
    s_lo, s_hi = jitter["stroke"]
    return dict(
        angle=(2 * u[0] - 1) * math.radians(jitter["rotation_deg"]),
        scale=lo + (hi - lo) * u[1],
        shear=(2 * u[2] - 1) * jitter["shear"],
        shift=(2 * u[3:5].T - 1) * jitter["shift_px"],                 # [n, 2] (x, y)
        stroke=(s_lo + (u[5] * (s_hi - s_lo + 1)).floor()).long(),     # integers in [lo, hi]
    )


def affine_theta(angle: torch.Tensor, scale: torch.Tensor, shear: torch.Tensor,
                 shift: torch.Tensor) -> torch.Tensor:
    """`affine_grid` matrices [n, 2, 3]: output point -> input point (inverse of the jitter).

    Jitter (forward): p_out = R(angle) @ Shear(shear) @ (scale * p_in) + shift, in
    coordinates normalised to [-1, 1] (so a shift of 2 px is 2 * 2 / 28).
    """
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero, one = torch.zeros_like(angle), torch.ones_like(angle)
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    shr = torch.stack([torch.stack([one, shear], -1), torch.stack([zero, one], -1)], -2)
    forward = rot @ shr * scale[:, None, None]
    inverse = torch.linalg.inv(forward)
    t = shift * (2.0 / SIZE)
    return torch.cat([inverse, -(inverse @ t[:, :, None])], dim=2)


def change_stroke(x: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Thicken (radius > 0: dilation) or thin (radius < 0: erosion) strokes, per image.

    x float [n, 1, H, W]; dilation by r is a (2r+1)x(2r+1) max-pool, erosion a min-pool.
    """
    out = x.clone()
    for r in radius.unique().tolist():
        if r == 0:
            continue
        idx = torch.nonzero(radius == r).flatten()
        k = 2 * abs(r) + 1
        if r > 0:
            out[idx] = F.max_pool2d(x[idx], k, stride=1, padding=abs(r))
        else:
            out[idx] = -F.max_pool2d(-x[idx], k, stride=1, padding=abs(r))
    return out


def jitter(clean: np.ndarray, code_points: list[int], seed: int = 0,
           jitter: dict = JITTER, chunk: int = 16) -> np.ndarray:
    """The 20 drawers of every class, uint8 [n_classes, 20, 28, 28].

    clean: `render_clean` output [n_classes, 12, 112, 112] for `code_points`.
    Computed in float64 so that the rounding to uint8 does not depend on the
    order of floating-point operations.
    """
    n_draw = len(DRAWER_STYLES)
    out = np.zeros((len(code_points), n_draw, SIZE, SIZE), np.uint8)
    styles = torch.tensor(DRAWER_STYLES)
    for start in range(0, len(code_points), chunk):
        cps = code_points[start: start + chunk]
        params = [jitter_params(cp, seed, n_draw, jitter) for cp in cps]
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
