"""Images: checking a user's file before it is sent, and the pictures the smoke suite draws for itself.

A file that is not a complete JPEG, PNG or WebP is refused here with one line, before any request: a
backend would otherwise answer with a vague 400 or, worse, describe a broken image.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from smolconv.errors import SmolconvError

FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
MAX_PIXELS = 64_000_000  # beyond this, Pillow's decompression-bomb guard is the right answer


@dataclass(frozen=True)
class ImageFile:
    path: Path
    data: bytes
    format: str      # JPEG, PNG, WEBP
    size: tuple[int, int]

    @property
    def mime(self) -> str:
        return FORMATS[self.format]

    def as_png(self) -> bytes:
        """The same pixels as PNG: llama-server decodes JPEG and PNG itself but WebP only through ffmpeg,
        so WebP is converted first, exactly as Ollama does before it hands an image to llama-server."""
        from PIL import Image

        with Image.open(io.BytesIO(self.data)) as image:
            out = io.BytesIO()
            image.convert("RGB").save(out, format="PNG")
            return out.getvalue()


def load_image(path: str | Path) -> ImageFile:
    """Read and fully decode an image; one-line SmolconvError for anything a backend could not use."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SmolconvError(f"image {path} does not exist", "check the path") from None
    except OSError as exc:
        raise SmolconvError(f"cannot read image {path} ({exc.strerror})", "check its permissions") from None
    if not data:
        raise SmolconvError(f"image {path} is empty", "pass a JPEG, PNG or WebP file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt = image.format
            size = image.size
            if size[0] * size[1] > MAX_PIXELS:
                raise SmolconvError(f"image {path} is {size[0]}x{size[1]}, over {MAX_PIXELS // 1_000_000} megapixels",
                                    "scale it down first; the model sees at most a few megapixels anyway")
            image.load()  # decode every byte: catches truncated and corrupt files that open() accepts
    except SmolconvError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow refuses it in open(), before our own size check
        raise SmolconvError(f"image {path} is over {MAX_PIXELS // 1_000_000} megapixels, a decompression bomb ({exc})",
                            "scale it down first; the model sees at most a few megapixels anyway") from None
    except UnidentifiedImageError:
        raise SmolconvError(f"image {path} is not an image file Pillow can read",
                            "pass a JPEG, PNG or WebP file") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise SmolconvError(f"image {path} is corrupt or truncated ({exc})", "re-export or re-download it") from None
    if fmt not in FORMATS:
        raise SmolconvError(f"image {path} is {fmt}, which Ollama does not accept",
                            "convert it to PNG or JPEG first")
    if min(size) < 1:
        raise SmolconvError(f"image {path} has no pixels ({size[0]}x{size[1]})", "pass a real picture")
    return ImageFile(path=path, data=data, format=fmt, size=size)


# --------------------------------------------------------------------------------------------------
# Pictures the smoke suite draws (nothing is downloaded)


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
            tmp = path.with_name(f".{name}.tmp")
            write(tmp)
            tmp.replace(path)
        paths[key] = path
    # The video case's clip: 4 s at 10 fps, 4 frames sampled (1 fps), each one tile through the video projector.
    clip = directory / "moving-square.mp4"
    if not clip.exists():
        from smolconv.video import write_clip

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
