"""The smoke suite's own media: a drawn scene (a house by day and by night), its images, and a short clip of it."""

from __future__ import annotations

from pathlib import Path

from smolconv.core.fsutil import staged_file
from smolconv.media.video import require_av


def draw_scene(size: tuple[int, int], night: bool = False):
    """A landscape with a sky, a field, a sun (or moon) and a red house: simple, and easy to describe."""
    from PIL import Image, ImageDraw

    w, h = size
    sky = (20, 24, 60) if night else (135, 190, 235)
    image = Image.new("RGB", size, sky)
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, h * 2 // 3, w, h], fill=(40, 90, 40) if night else (70, 150, 60))
    light = (235, 235, 210) if night else (250, 210, 40)
    r = max(1, min(w, h) // 10)
    draw.ellipse([w // 8, h // 8, w // 8 + 2 * r, h // 8 + 2 * r], fill=light)
    draw.rectangle([w // 2, h * 2 // 5, w * 3 // 4, h * 2 // 3], fill=(190, 40, 40))
    draw.polygon([(w // 2 - w // 40, h * 2 // 5), (w * 5 // 8, h // 4), (w * 3 // 4 + w // 40, h * 2 // 5)],
                 fill=(110, 60, 30))
    draw.rectangle([w * 9 // 16, h * 3 // 5 - h // 40, w * 5 // 8, h * 2 // 3], fill=(90, 50, 20))
    return image


def write_smoke_images(directory: Path) -> dict[str, Path]:
    """The smoke suite's image files: one scene in three formats, a second scene, edge cases, a corrupt file."""
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    # A 4:1 panorama: every image is resized to the preprocessor's longest edge before tiling, so the tile
    # count depends only on the aspect ratio. 4:1 makes 4 tiles + 1 overview (a 4:3 photo makes 13),
    # which keeps the suite quick on a CPU. The edge cases keep their own sizes.
    scene = draw_scene((960, 240))
    files = {
        "scene_jpeg": ("scene.jpg", lambda p: scene.save(p, format="JPEG", quality=90)),
        "scene_png": ("scene.png", lambda p: scene.save(p, format="PNG")),
        "scene_webp": ("scene.webp", lambda p: scene.save(p, format="WEBP", quality=90)),
        "night_png": ("night.png", lambda p: draw_scene((960, 240), night=True).save(p, format="PNG")),
        "blank_png": ("blank.png", lambda p: Image.new("RGB", (960, 240), (255, 255, 255)).save(p, format="PNG")),
        "one_pixel_png": ("one-pixel.png", lambda p: Image.new("RGB", (1, 1), (200, 30, 30)).save(p, format="PNG")),
        "large_jpeg": ("large-4000x3000.jpg", lambda p: draw_scene((4000, 3000)).save(p, format="JPEG", quality=85)),
    }
    paths = {}
    for key, (name, write) in files.items():
        path = directory / name
        if not path.exists():
            with staged_file(path) as tmp:
                write(tmp)
        paths[key] = path
    # The video case's clip: 4 s at 10 fps, 4 frames sampled (1 fps), each one tile through the video projector.
    clip = directory / "moving-square.mp4"
    if not clip.exists():
        tmp = clip.with_name(f".{clip.stem}.tmp.mp4")
        write_clip(tmp, seconds=4, fps=10)
        tmp.replace(clip)
    paths["clip_mp4"] = clip
    # A JPEG whose data stops half way and is followed by noise: Pillow opens it, decoding fails.
    corrupt = directory / "corrupt.jpg"
    good = paths["scene_jpeg"].read_bytes()
    corrupt.write_bytes(good[: len(good) // 3] + bytes(range(256)) * 4)
    paths["corrupt_jpeg"] = corrupt
    return paths


def write_clip(path: Path, seconds: float = 4, fps: float = 10, size: tuple[int, int] = (320, 180),
               codec: str = "mpeg4", gop: int = 12) -> Path:
    """A clip of a red square moving left to right over a blue background, one step a frame (smoke's video
    case, and the tests' videos): MPEG-4 Part 2, which every FFmpeg, PyAV's included, encodes."""
    from fractions import Fraction

    import numpy as np

    av = require_av()
    width, height = size
    frames = max(1, int(round(seconds * fps)))
    side = max(4, height // 4)
    # faststart: the index before the frames, so a reader on a pipe (llama-server's ffprobe) finds it.
    options = {"movflags": "faststart"} if Path(path).suffix.lower() in (".mp4", ".mov") else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        for n in range(frames):
            pixels = np.full((height, width, 3), (40, 90, 160), dtype=np.uint8)
            x = int((width - side) * n / max(1, frames - 1))
            pixels[height // 2 - side // 2: height // 2 + side // 2, x: x + side] = (220, 40, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
