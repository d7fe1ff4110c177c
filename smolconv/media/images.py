"""Images: checking a user's file before it is sent, and the pictures the smoke suite draws for itself.

A file that is not a complete JPEG, PNG or WebP is refused here with one line, before any request: a
backend would otherwise answer with a vague 400 or, worse, describe a broken image.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from smolconv.core.errors import SmolconvError

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




