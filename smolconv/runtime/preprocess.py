"""SmolVLM's image preprocessing in numpy and Pillow, for running the ONNX graphs without torch.

The same steps as transformers' (slow) SmolVLMImageProcessor: resize so the long side is
`size.longest_edge`, resize up to multiples of the tile size, cut into tiles row by row plus one
overview tile of the whole image, rescale to [0, 1], normalise. smolconv's runner uses transformers'
processor by default; tests check that this one gives the same pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smolconv.source.checkpoint import image_processor_config


@dataclass(frozen=True)
class Tiles:
    pixels: np.ndarray  # [tiles, 3, size, size] float32, the overview tile last
    rows: int           # 0 and 0 when the image is one tile (no overview then)
    cols: int


class NumpyImageProcessor:
    def __init__(self, folder: str | Path):
        config = image_processor_config(Path(folder))  # preprocessor_config.json, or 5.x's processor_config.json
        self.longest_edge = config["size"]["longest_edge"]
        self.tile = config["max_image_size"]["longest_edge"]
        self.split = config.get("do_image_splitting", True)
        self.mean = np.array(config.get("image_mean", [0.5] * 3), dtype=np.float32)[:, None, None]
        self.std = np.array(config.get("image_std", [0.5] * 3), dtype=np.float32)[:, None, None]
        self.scale = float(config.get("rescale_factor", 1 / 255))
        self.resample = int(config.get("resample", 1))

    def __call__(self, image) -> Tiles:
        image = image.convert("RGB")
        w, h = image.size
        # The long side to `longest_edge`, the short one kept even (as transformers rounds it).
        if w >= h:
            w, h = self.longest_edge, int(self.longest_edge / (w / h))
            h += h % 2
        else:
            w, h = int(self.longest_edge * (w / h)), self.longest_edge
            w += w % 2
        image = image.resize((max(w, 1), max(h, 1)), resample=self.resample)
        # Then up to whole tiles.
        w, h = image.size
        ratio = w / h
        if w >= h:
            w = math.ceil(w / self.tile) * self.tile
            h = math.ceil(int(w / ratio) / self.tile) * self.tile
        else:
            h = math.ceil(h / self.tile) * self.tile
            w = math.ceil(int(h * ratio) / self.tile) * self.tile
        image = image.resize((w, h), resample=self.resample)
        frames, rows, cols = [image], 0, 0
        if self.split and (w > self.tile or h > self.tile):
            rows, cols = math.ceil(h / self.tile), math.ceil(w / self.tile)
            th, tw = math.ceil(h / rows), math.ceil(w / cols)
            frames = [image.crop((c * tw, r * th, min(w, (c + 1) * tw), min(h, (r + 1) * th)))
                      for r in range(rows) for c in range(cols)]
            frames.append(image.resize((self.tile, self.tile), resample=self.resample))
        pixels = np.stack([self._normalise(f) for f in frames])
        return Tiles(pixels, rows, cols)

    def _normalise(self, frame) -> np.ndarray:
        values = np.asarray(frame, dtype=np.float32).transpose(2, 0, 1) * self.scale
        return ((values - self.mean) / self.std).astype(np.float32)


class TransformersImageProcessor:
    """transformers' SmolVLM image processor on its PIL backend (transformers 5's `SmolVLMImageProcessor` is the
    torchvision one, which does not load beside a CPU torch)."""

    def __init__(self, folder: str | Path):
        from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

        self.processor = SmolVLMImageProcessorPil.from_pretrained(folder)

    def __call__(self, image) -> Tiles:
        out = self.processor([[image.convert("RGB")]], return_tensors="np", return_row_col_info=True,
                             input_data_format="channels_last")
        return Tiles(out["pixel_values"][0].astype(np.float32), out["rows"][0][0], out["cols"][0][0])


def frame_tiles(image, tile: int, config: dict) -> Tiles:
    """A video frame as SmolVLMVideoProcessor gives it: squared to the tile (LANCZOS; smolconv.media.video has squared
    it already), rescaled and normalised with the image processor's settings, one tile and no overview."""
    from PIL import Image

    image = image.convert("RGB")
    if image.size != (tile, tile):
        image = image.resize((tile, tile), Image.Resampling.LANCZOS)
    mean = np.array(config.get("image_mean", [0.5] * 3), dtype=np.float32)[:, None, None]
    std = np.array(config.get("image_std", [0.5] * 3), dtype=np.float32)[:, None, None]
    values = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) * float(config.get("rescale_factor", 1 / 255))
    return Tiles(((values - mean) / std).astype(np.float32)[None], 0, 0)


def image_prompt(tiles: Tiles, image_seq_len: int) -> str:
    """The text an `<image>` becomes: each tile as `<fake_token_around_image><row_r_col_c>` and its image
    tokens, rows ended by a newline, then the overview as `<global-img>` (SmolVLMProcessor's layout)."""
    fake, image, overview = "<fake_token_around_image>", "<image>" * image_seq_len, "<global-img>"
    if tiles.rows == 0 and tiles.cols == 0:
        return f"{fake}{overview}{image}{fake}"
    text = ""
    for r in range(tiles.rows):
        text += "".join(f"{fake}<row_{r + 1}_col_{c + 1}>{image}" for c in range(tiles.cols)) + "\n"
    return text + f"\n{fake}{overview}{image}{fake}"
