"""The size-against-loss picture: each quantized variant's file size against its mean KL divergence from F16.

`publish` puts it into the repo (`size-vs-kld.png`) and the model card shows it; scripts/make_figures.py draws the
docs' copy from a real build the same way. Drawn with Pillow (already a dependency) so that a publish needs no
plotting library; the same numbers give the same bytes.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

PICTURE_NAME = "size-vs-kld.png"
WIDTH, HEIGHT = 760, 440
LEFT, RIGHT, TOP, BOTTOM = 70, 150, 70, 60  # the plot area's margins (labels of the points go right of it)
INK, GRID, POINT, REFERENCE = (40, 40, 40), (225, 225, 225), (31, 119, 180), (120, 120, 120)


@dataclass(frozen=True)
class Point:
    variant: str
    size_bytes: int
    mean_kld: float | None  # None: the F16 reference (no loss by definition)
    same_top: float | None = None


def points(sizes: dict[str, int], verify: dict | None) -> list[Point]:
    """The variants verify measured (its record in build.json), with their text files' sizes, and F16 as the
    reference; empty when verify measured no KL divergence (not run, or `--skip-check kld`)."""
    measured = (verify or {}).get("kld", {}).get("variants") or []
    found = [Point(k["variant"], sizes[k["variant"]], k["mean_kld"], k.get("same_top"))
             for k in measured if sizes.get(k["variant"])]
    if found and sizes.get("F16"):
        found.append(Point("F16", sizes["F16"], None))
    return found


def _nice_step(span: float, ticks: int = 5) -> float:
    raw = span / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a scalable font
    except TypeError:
        return ImageFont.load_default()


def draw(found: list[Point], title: str) -> bytes:
    """The PNG: size (MiB) across, mean KLD up; each point labelled with its variant, KLD and same-top rate."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    pen = ImageDraw.Draw(image)
    font, small = _font(15), _font(13)
    pen.text((WIDTH // 2, 18), title, fill=INK, font=font, anchor="mt")
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, HEIGHT - BOTTOM, TOP
    sizes = [p.size_bytes / 2**20 for p in found]
    klds = [p.mean_kld for p in found if p.mean_kld is not None]
    low, high = min(sizes), max(sizes)
    pad = max((high - low) * 0.08, 1.0)
    x_step = _nice_step(high - low + 2 * pad)
    x_min, x_max = math.floor((low - pad) / x_step) * x_step, math.ceil((high + pad) / x_step) * x_step
    y_step = _nice_step(max(klds) * 1.1)
    y_max = math.ceil(max(klds) * 1.12 / y_step) * y_step

    def at(size_mib: float, kld: float) -> tuple[float, float]:
        return (x0 + (size_mib - x_min) / (x_max - x_min) * (x1 - x0), y0 - kld / y_max * (y0 - y1))

    tick = x_min
    while tick <= x_max + 1e-9:
        x, _ = at(tick, 0)
        pen.line([(x, y1), (x, y0)], fill=GRID)
        pen.text((x, y0 + 8), f"{tick:g}", fill=INK, font=small, anchor="mt")
        tick += x_step
    tick = 0.0
    while tick <= y_max + 1e-12:
        _, y = at(x_min, tick)
        pen.line([(x0, y), (x1, y)], fill=GRID)
        pen.text((x0 - 8, y), f"{tick:.3g}", fill=INK, font=small, anchor="rm")
        tick += y_step
    pen.rectangle([x0, y1, x1, y0], outline=INK)
    pen.text(((x0 + x1) // 2, HEIGHT - 22), "file size (MiB, text model)", fill=INK, font=small, anchor="mm")
    pen.text((x0, y1 - 10), "mean KL divergence from F16 (llama-perplexity; lower is closer)", fill=INK,
             font=small, anchor="lb")
    for p in sorted(found, key=lambda p: p.size_bytes):
        x, y = at(p.size_bytes / 2**20, p.mean_kld or 0.0)
        if p.mean_kld is None:
            pen.ellipse([x - 6, y - 6, x + 6, y + 6], outline=REFERENCE, width=2)
            label = f"{p.variant}: the reference"
        else:
            pen.ellipse([x - 6, y - 6, x + 6, y + 6], fill=POINT)
            same = "" if p.same_top is None else f", same top {100 * p.same_top:.1f}%"
            label = f"{p.variant}: KLD {p.mean_kld:.4f}{same}"
        pen.text((x + 10, y - 2), label, fill=INK, font=small, anchor="lb")
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()
