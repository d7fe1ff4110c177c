"""The video projector: the build's vision projector with one value of metadata changed, so that llama.cpp
encodes a video frame as one tile instead of tiling it like a photo.

clip.cpp reads `clip.vision.preproc_image_size` as the longest edge it resizes an image to before cutting
tiles (2048 on 256M/500M: a 16:9 frame becomes 12 tiles and an overview). Set to the tile size (image_size),
a frame, squared to that size as SmolVLM2's video processor does, is one tile. llama.cpp's idefics3
preprocessor still adds the overview beside it, so a frame costs two tiles' tokens where transformers spends
one: same pixels twice, under two wrappers (docs/video.md has the measurements).

Same tensors, same bytes but the one value: written as a copy, patched in place, and read back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from smolconv.core.errors import SmolconvError
from smolconv.record.builddir import BuildDir

STEP = "video-projector"
PREPROC_KEY = "clip.vision.preproc_image_size"


@dataclass
class VideoProjectorResult:
    path: Path
    frame_size: int           # the tile size a frame is squared to
    skipped: bool
    seconds: float


def video_projector_name(projector: Path) -> str:
    """mmproj-SmolVLM2-256M-Video-Instruct-f16.gguf → mmproj-SmolVLM2-256M-Video-Instruct-f16-video.gguf"""
    return f"{projector.stem}-video.gguf"


def write_video_projector(build: BuildDir, *, force: bool = False) -> VideoProjectorResult:
    """The video projector beside the projector the build ships (the quantized one when there is one)."""
    import shutil

    manifest = build.manifest
    variant = build.variants()[0]  # every variant of a build shares its projector
    source, image_size = variant.projector_path, variant.projector.image_size
    target = build.path / video_projector_name(source)
    params = {PREPROC_KEY: image_size}
    inputs = {source.name: manifest.sha256(source)}
    key = manifest.step_key(inputs, params)
    if manifest.up_to_date(STEP, key, [target], force=force):
        return VideoProjectorResult(target, image_size, skipped=True, seconds=0.0)
    started = time.monotonic()
    with manifest.staged_output(target) as partial:
        shutil.copyfile(source, partial)
        set_preproc_image_size(partial, image_size)
    manifest.record_step(STEP, key, params, inputs, [target], time.monotonic() - started)
    build.save()
    return VideoProjectorResult(target, image_size, skipped=False, seconds=time.monotonic() - started)


def set_preproc_image_size(path: Path, size: int) -> None:
    """Patch the value in place (a fixed-width integer: nothing moves), then check it reads back."""
    from gguf import GGUFReader

    reader = GGUFReader(path, "r+")
    field = reader.fields.get(PREPROC_KEY)
    if field is None:
        raise SmolconvError(f"{path.name} has no {PREPROC_KEY} (a projector from an older converter)",
                            "convert the checkpoint again with `smolconv build --force`")
    field.parts[field.data[0]][0] = size
    reader.data.flush()
    del reader
    if int(GGUFReader(path).fields[PREPROC_KEY].contents()) != size:
        raise SmolconvError(f"could not write {PREPROC_KEY} into {path.name}", "check the disk, then build again")
