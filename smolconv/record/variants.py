"""What the planner knows about a variant: read from a build's GGUF files (or estimated, see quant_rules)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from smolconv.core.errors import SmolconvError
from smolconv.llamacpp.gguf_header import read_gguf_header
from smolconv.record.manifest import Manifest  # here: plan on a known shape needs no build

# --------------------------------------------------------------------------------------------------
# What the planner knows about a variant


@dataclass(frozen=True)
class TextModel:
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_vocab: int
    n_ctx_train: int
    layer_bytes: tuple[int, ...]  # tensor bytes of each repeating block
    input_bytes: int              # token_embd: stays in host memory
    output_bytes: int             # output + output_norm: on the GPU only with every layer

    @property
    def weight_bytes(self) -> int:
        return sum(self.layer_bytes) + self.input_bytes + self.output_bytes


# "\nFrame from 00:01:" in SmolLM2's tokenizer (measured on the fixture; the same for any MM:SS).
FRAME_TEXT_TOKENS = 10


def llama_cpp_frame_tokens(tokens_per_tile: int) -> int:
    """A video frame's prompt tokens through llama.cpp's video projector: its idefics3 preprocessor gives the one
    tile and still an overview, <fake…><row_1_col_1>, the tile, then "\n\n", <fake…><global-img>, the overview
    and <fake…>; then the frame's "\nFrame from MM:SS:"."""
    return 2 * tokens_per_tile + 6 + FRAME_TEXT_TOKENS


def transformers_frame_tokens(tokens_per_tile: int) -> int:
    """A video frame as transformers (and smolconv's in-process runtimes) give it: <fake…><global-img>, the one
    tile, <fake…>, and the frame's "\nFrame from MM:SS:"."""
    return tokens_per_tile + 3 + FRAME_TEXT_TOKENS


@dataclass(frozen=True)
class Projector:
    weight_bytes: int
    image_size: int          # the tile the vision tower sees
    patch_size: int
    scale_factor: int        # pixel shuffle: tokens per tile shrink by its square
    preproc_image_size: int  # an image's long side is resized to this before tiling
    n_embd: int
    n_ff: int

    @property
    def tokens_per_tile(self) -> int:
        patches = self.image_size // self.patch_size
        return (patches * patches) // (self.scale_factor * self.scale_factor)

    def grid(self, size: tuple[int, int]) -> tuple[int, int]:
        """Columns and rows of tiles for an image of `size` (w, h): llama.cpp and transformers resize its long
        side to the preprocessor's longest edge (up or down), then cut image_size tiles."""
        w, h = size
        scale = self.preproc_image_size / max(w, h)
        return (math.ceil(max(1, round(w * scale)) / self.image_size),
                math.ceil(max(1, round(h * scale)) / self.image_size))

    def tiles(self, size: tuple[int, int]) -> int:
        """The grid's tiles plus one overview of the whole image (a single tile has no overview)."""
        cols, rows = self.grid(size)
        return cols * rows + (1 if cols * rows > 1 else 0)

    def image_tokens(self, size: tuple[int, int]) -> int:
        """Prompt tokens of one image, as SmolVLM's processor lays it out (llama.cpp's mtmd does the same):
        each tile is <fake_token_around_image><row_r_col_c> and its tokens, each row of tiles ends in a
        newline, then a newline, <fake_token_around_image><global-img> and the overview, and a closing
        <fake_token_around_image>. A single tile is just <fake…><global-img>, its tokens, <fake…>."""
        cols, rows = self.grid(size)
        tile = self.tokens_per_tile + 2
        if cols * rows == 1:
            return tile + 1
        return cols * rows * tile + rows + 1 + tile + 1

    @property
    def max_tiles(self) -> int:
        """Tiles of the largest (square) image."""
        return self.tiles((self.image_size, self.image_size))

    @property
    def max_image_tokens(self) -> int:
        return self.image_tokens((self.image_size, self.image_size))

    @property
    def video_frame_tokens(self) -> int:
        """A video frame through the video projector (its preprocessing size is the tile)."""
        return llama_cpp_frame_tokens(self.tokens_per_tile)

    @property
    def one_tile_frames(self) -> bool:
        """This is a video projector: a squared frame is one tile (its preprocessing size is the tile)."""
        return self.preproc_image_size == self.image_size

    @property
    def photo_frame_tokens(self) -> int:
        """A 16:9 frame sent as an ordinary image (the image projector tiles it like a photo: 13 tiles)."""
        return self.image_tokens((16, 9))


@dataclass(frozen=True)
class Variant:
    name: str                  # the quant type: Q4_K_M, F16, ...
    text: TextModel
    projector: Projector
    text_path: Path | None = None
    projector_path: Path | None = None
    estimated: bool = False    # weights computed from config dimensions, not read from files
    model: str = ""            # the model these files are (shape name or build directory)
    adapter_path: Path | None = None  # a GGUF LoRA that llama-server loads beside the text model (--lora)
    adapter_bytes: int = 0
    video_projector_path: Path | None = None  # the projector that encodes a video frame as one tile

    def for_video(self) -> Variant:
        """This variant served with its video projector (same tensors; a frame's long side is the tile)."""
        if self.video_projector_path is None:
            raise SmolconvError(f"{self.name} has no video projector", "run `smolconv build` again to write it")
        return replace(self, projector_path=self.video_projector_path,
                       projector=replace(self.projector, preproc_image_size=self.projector.image_size))


# --------------------------------------------------------------------------------------------------
# Reading variants from GGUF files


def read_text_model(path: Path) -> TextModel:
    header = read_gguf_header(path)
    arch = header.get("general.architecture")
    if header.get("general.type") == "mmproj" or arch == "clip":
        raise SmolconvError(f"{path} is a vision projector, not a text model", "pass the text GGUF")
    n_layer = int(header.get(f"{arch}.block_count"))
    layers = [0] * n_layer
    input_bytes = output_bytes = 0
    for tensor in header.tensors:
        name, size = tensor.name, tensor.n_bytes
        if name.startswith("blk."):
            layers[int(name.split(".")[1])] += size
        elif name.startswith("token_embd"):
            input_bytes += size
        else:  # output, output_norm, rope factors
            output_bytes += size
    n_embd = int(header.get(f"{arch}.embedding_length"))
    n_head = int(header.get(f"{arch}.attention.head_count"))
    return TextModel(
        n_layer=n_layer, n_embd=n_embd, n_ff=int(header.get(f"{arch}.feed_forward_length")),
        n_head=n_head, n_head_kv=int(header.get(f"{arch}.attention.head_count_kv", n_head)),
        head_dim=int(header.get(f"{arch}.attention.key_length", n_embd // n_head)),
        n_vocab=int(header.get(f"{arch}.vocab_size", header.array_length("tokenizer.ggml.tokens"))),
        n_ctx_train=int(header.get(f"{arch}.context_length")),
        layer_bytes=tuple(layers), input_bytes=input_bytes, output_bytes=output_bytes,
    )


def read_projector(path: Path) -> Projector:
    header = read_gguf_header(path)
    if header.get("general.architecture") != "clip":
        raise SmolconvError(f"{path} is not a vision projector (architecture is not clip)",
                            "pass the mmproj-*.gguf that `smolconv convert` wrote")
    image_size = int(header.get("clip.vision.image_size"))
    return Projector(
        weight_bytes=sum(t.n_bytes for t in header.tensors),
        image_size=image_size,
        patch_size=int(header.get("clip.vision.patch_size")),
        scale_factor=int(header.get("clip.vision.projector.scale_factor", 1)),
        preproc_image_size=int(header.get("clip.vision.preproc_image_size", image_size)),
        n_embd=int(header.get("clip.vision.embedding_length")),
        n_ff=int(header.get("clip.vision.feed_forward_length")),
    )


def read_variant(name: str, text_path: Path, projector_path: Path, model: str = "") -> Variant:
    return Variant(name=name, text=read_text_model(text_path), projector=read_projector(projector_path),
                   text_path=text_path, projector_path=projector_path, model=model)




# --------------------------------------------------------------------------------------------------
# A build directory's variants


def build_variants(out_dir: Path, types: tuple[str, ...] = ()) -> list[Variant]:
    """The variants a build directory holds, read from the files its build.json lists (a command that has the
    directory open already asks its BuildDir, which reads each file once)."""

    return manifest_variants(Path(out_dir), Manifest.load(out_dir), types)


def manifest_variants(out_dir: Path, manifest: Manifest, types: tuple[str, ...] = (),
                      read_text: Callable[[Path], TextModel] = read_text_model,
                      read_proj: Callable[[Path], Projector] = read_projector) -> list[Variant]:
    """The variants of the build whose build.json is `manifest`, their GGUF headers read by the readers given."""
    convert_step = manifest.step("convert")
    if not convert_step:
        raise SmolconvError(f"{out_dir} has no build.json with a converted model",
                            "run `smolconv build` first, or plan a known model such as 2.2b")
    text_name, projector_name = convert_step.outputs
    projector_path = out_dir / projector_name
    files: dict[str, Path] = {convert_step.params["outtype"].upper(): out_dir / text_name}
    for step_name, step in manifest.steps().items():
        if step_name.startswith("quantize:"):
            files[step.params["type"].upper()] = out_dir / step.outputs[0]
        elif step_name.startswith("quantize-mmproj:"):
            projector_path = out_dir / step.outputs[0]  # the quantized projector is the one to ship
    # Without a choice: every variant still on disk (a user may have deleted one).
    wanted = [t.upper() for t in types] or [t for t, path in files.items() if path.is_file()]
    missing = [t for t in wanted if t not in files]
    if missing:
        raise SmolconvError(f"{out_dir} has no {', '.join(missing)} variant",
                            f"plan one of {', '.join(files)}, or run `smolconv quantize --type {missing[0]}`")
    projector = read_proj(projector_path)
    adapter_path = None
    adapter_step, adapter = manifest.step("convert-adapter"), manifest.adapter
    if adapter_step and adapter is not None and adapter.format == "gguf":
        adapter_path = out_dir / adapter_step.outputs[0]
        if not adapter_path.is_file():
            raise SmolconvError(f"{adapter_path} is missing", "run `smolconv build` again")
    adapter_bytes = adapter_path.stat().st_size if adapter_path else 0
    video_step = manifest.step("video-projector")
    video_projector = out_dir / video_step.outputs[0] if video_step else None
    if video_projector is not None and not video_projector.is_file():
        video_projector = None  # deleted: the variant serves images only, as before the video projector
    variants = []
    for qtype in wanted:
        path = files[qtype]
        if not path.is_file():
            raise SmolconvError(f"{path} is missing", "run `smolconv build` again")
        variants.append(Variant(qtype, read_text(path), projector, path, projector_path, model=out_dir.name,
                                adapter_path=adapter_path, adapter_bytes=adapter_bytes,
                                video_projector_path=video_projector))
    return variants
