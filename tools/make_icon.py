"""Draw the module icon, Resources/Icons/DeepDRRSlicer.png (128 x 128 RGBA).

A stylised C-arm (an arc with a source at one end and a flat-panel detector at
the other) over a grey, radiograph-like gradient. Deterministic: running it
twice gives the same file.

Usage:  python tools/make_icon.py [output.png]
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 128
SUPERSAMPLE = 4  # draw large, then downsample for smooth edges


def _background(n: int) -> Image.Image:
    """Rounded dark square holding a soft radiograph-like gradient with a 'spine'."""
    y, x = np.mgrid[0:n, 0:n].astype(np.float64) / (n - 1)
    # Bright centre (body), darker edges (air), like an AP film.
    r2 = ((x - 0.5) / 0.42) ** 2 + ((y - 0.55) / 0.55) ** 2
    body = np.clip(1.0 - r2, 0.0, 1.0) ** 0.6
    spine = np.exp(-(((x - 0.5) / 0.045) ** 2)) * (0.35 + 0.15 * np.cos(y * 40.0))
    grey = 40 + 120 * body + 80 * spine * body
    grey = np.clip(grey, 0, 255).astype(np.uint8)
    rgb = np.stack([grey, grey, grey], axis=-1)
    img = Image.fromarray(rgb, "RGB").convert("RGBA")

    mask = Image.new("L", (n, n), 0)
    ImageDraw.Draw(mask).rounded_rectangle((0, 0, n - 1, n - 1), radius=n // 8, fill=255)
    img.putalpha(mask)
    return img


def _c_arm(n: int) -> Image.Image:
    """The C-arm: an open arc, an X-ray tube at the bottom end, a detector on top."""
    layer = Image.new("RGBA", (n, n), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    cx, cy = n * 0.50, n * 0.52
    radius = n * 0.40
    width = int(n * 0.075)
    arm = (40, 140, 230, 255)
    # Arc open towards the right-hand side, as a C (PIL angles run clockwise
    # from 3 o'clock, so 90 is the bottom and 270 the top).
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    d.arc(box, start=90, end=270, fill=arm, width=width)

    def end_point(deg: float) -> tuple[float, float]:
        a = math.radians(deg)
        return cx + radius * math.cos(a), cy + radius * math.sin(a)

    # Source (tube) at the lower end, detector (flat panel) at the upper end.
    sx, sy = end_point(90)
    tx, ty = end_point(270)
    tube = n * 0.07
    d.ellipse((sx - tube, sy - tube, sx + tube, sy + tube), fill=(250, 200, 60, 255))
    panel_w, panel_h = n * 0.30, n * 0.06
    d.rectangle((tx - panel_w / 2, ty - panel_h / 2, tx + panel_w / 2, ty + panel_h / 2), fill=(30, 110, 200, 255))

    # Beam cone from source to detector.
    beam = Image.new("RGBA", (n, n), (0, 0, 0, 0))
    ImageDraw.Draw(beam).polygon(
        [(sx, sy), (tx - panel_w / 2, ty + panel_h / 2), (tx + panel_w / 2, ty + panel_h / 2)],
        fill=(255, 230, 120, 90),
    )
    beam = beam.filter(ImageFilter.GaussianBlur(n / 200))
    return Image.alpha_composite(beam, layer)


def make_icon() -> Image.Image:
    n = SIZE * SUPERSAMPLE
    img = Image.alpha_composite(_background(n), _c_arm(n))
    return img.resize((SIZE, SIZE), Image.Resampling.LANCZOS)


def main(argv: list[str]) -> int:
    default = Path(__file__).resolve().parents[1] / "Resources" / "Icons" / "DeepDRRSlicer.png"
    out = Path(argv[1]) if len(argv) > 1 else default
    out.parent.mkdir(parents=True, exist_ok=True)
    make_icon().save(out, optimize=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
