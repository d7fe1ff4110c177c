"""`smolconv ask`: one question to what was built, with images or a video, the answer streamed.

Backends: `server` (a build directory: llama-server on one of its variants, started for the question and
stopped after), `ollama` (a model tag, through Ollama's API), `onnx` (an export-onnx folder, in process).
A video goes as SmolVLM2's video prompt (smolconv.video): on llama-server through the build's video
projector, on Ollama as `Frame from MM:SS:[img]` lines that its prompt code fills in order. Whether the
frames fit the context is decided before any frame is decoded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from smolconv.chat import Answer, Message
from smolconv.choices import AskBackend
from smolconv.errors import SmolconvError
from smolconv.plan import PlanSettings
from smolconv.plan.variants import FRAME_TEXT_TOKENS
from smolconv.progress import ProgressFn, no_progress

# What a question and the chat template's wrapping take besides the media (the plan keeps the same margin).
TEXT_RESERVE = 256
# A frame on a model whose projector ask cannot read (Ollama): SmolVLM2-256M/500M's 512-pixel tile.
DEFAULT_FRAME_SIZE = 512
DEFAULT_TOKENS_PER_TILE = 64


@dataclass
class AskOptions:
    target: str                           # build directory (server), Ollama tag (ollama), ONNX folder (onnx)
    question: str
    images: tuple[Path, ...] = ()
    video: Path | None = None
    fps: float = 1.0
    max_frames: int = 64
    backend: AskBackend = AskBackend.SERVER
    variant: str | None = None            # server: Q4_K_M, Q8_0, …; onnx: fp32, q4, …
    max_tokens: int = 512
    url: str | None = None                # ollama: the server (default OLLAMA_HOST)
    settings: PlanSettings = field(default_factory=PlanSettings)
    threads: int | None = None


@dataclass
class AskResult:
    answer: Answer
    backend: dict                         # what answered: the backend's own description
    frames: list[float] = field(default_factory=list)   # the sampled frames' times, seconds
    frame_tokens: int | None = None       # prompt tokens per frame, as planned
    decoded_frames: int = 0


@dataclass(frozen=True)
class FrameBudget:
    n_ctx: int
    tokens_per_frame: int
    frame_size: int

    def frames_that_fit(self, max_tokens: int, other_tokens: int = 0) -> int:
        return max(0, (self.n_ctx - TEXT_RESERVE - max_tokens - other_tokens) // self.tokens_per_frame)


def check_request(options: AskOptions) -> None:
    if options.video and options.images:
        raise SmolconvError("ask takes --image or --video, not both in one question",
                            "ask about the video and the images separately")
    if options.max_tokens < 1:
        raise SmolconvError(f"--max-tokens {options.max_tokens} generates nothing", "use 1 or more")


def ask(options: AskOptions, toolchain=None, on_text: Callable[[str], None] | None = None,
        progress: ProgressFn = no_progress) -> AskResult:
    from smolconv.images import load_image

    check_request(options)
    images = [load_image(path) for path in options.images]
    if options.video:
        from smolconv.video import probe

        probe(options.video)  # a file that is no video is refused before any server starts
    if options.backend is AskBackend.SERVER:
        return _ask_server(options, images, toolchain, on_text, progress)
    if options.backend is AskBackend.OLLAMA:
        from smolconv.chat import OllamaBackend

        backend = OllamaBackend(options.target, options.url)
        info = backend.info()
        budget = FrameBudget(int(info.get("n_ctx") or 2048), _frame_tokens(DEFAULT_TOKENS_PER_TILE),
                             DEFAULT_FRAME_SIZE)
        return _ask(backend, info, options, images, budget, on_text, progress)
    if options.backend is AskBackend.MLX:
        from smolconv.mlx.runtime import MlxBackend

        backend = MlxBackend(options.target, n_ctx=8192)
    else:
        from smolconv.onnx.runtime import OnnxBackend

        backend = OnnxBackend(options.target, options.variant or "fp32", n_ctx=8192, threads=options.threads)
    # In process, a frame is transformers' one tile: its image tokens, the wrapper around them and its timestamp.
    model = backend.model
    budget = FrameBudget(backend.n_ctx, model.image_seq_len + 3 + FRAME_TEXT_TOKENS, model.tile_size)
    return _ask(backend, backend.info(), options, images, budget, on_text, progress)


def _frame_tokens(tokens_per_tile: int) -> int:
    """A frame through llama.cpp's video projector: two tiles and their wrappers (Projector.video_frame_tokens)."""
    return 2 * tokens_per_tile + 6 + FRAME_TEXT_TOKENS


def _ask_server(options: AskOptions, images, toolchain, on_text, progress) -> AskResult:
    from smolconv.builddir import BuildDir
    from smolconv.chat import LlamaServerBackend
    from smolconv.plan import plan_variant
    from smolconv.serve import ServeOptions, pick_variant, start_server

    if not (Path(options.target) / "build.json").is_file():
        raise SmolconvError(f"{options.target} is not a build directory (no build.json)",
                            "pass the --out folder of `smolconv build`, or --backend ollama with a model tag")
    build = BuildDir.open(options.target)
    variant = pick_variant(build, options.variant)
    if options.video:
        if variant.video_projector_path is None:
            from smolconv.video_projector import write_video_projector

            progress("writing the build's video projector", None)
            write_video_projector(build)
            variant = pick_variant(build, variant.name)
        # Frames through the video projector: one tile each instead of a photo's tiling.
        variant = variant.for_video()
    plan = plan_variant(variant, options.settings)
    budget = FrameBudget(plan.num_ctx, variant.projector.video_frame_tokens, variant.projector.image_size)
    _check_fit(options, budget)  # before llama-server loads anything
    progress(f"starting llama-server with {variant.name}", None)
    serve = ServeOptions(Path(options.target), variant.name, port=0, settings=options.settings,
                         threads=options.threads)
    with start_server(serve, toolchain, variant) as server:
        backend = LlamaServerBackend(server.url)
        return _ask(backend, backend.info(), options, images, budget, on_text, progress)


def _check_fit(options: AskOptions, budget: FrameBudget | None) -> int:
    """The frames the video gives, refused in one line when they cannot fit (counted from the header only)."""
    if not options.video or budget is None:
        return 0
    from smolconv.video import frame_indices, probe

    count = len(frame_indices(probe(options.video), options.fps, options.max_frames))
    fit = budget.frames_that_fit(options.max_tokens)
    if count > fit:
        raise SmolconvError(
            f"{count} frames of {options.video.name} need about {count * budget.tokens_per_frame} prompt tokens "
            f"({budget.tokens_per_frame} a frame); the context is {budget.n_ctx} with {options.max_tokens} kept "
            f"for the answer, room for {fit}",
            f"pass --max-frames {fit}" if fit else "use a model with a larger num_ctx (smolconv plan)")
    return count


def _ask(backend, info: dict, options: AskOptions, images, budget: FrameBudget | None, on_text,
         progress: ProgressFn) -> AskResult:
    result_frames: list[float] = []
    decoded = 0
    if options.video:
        from smolconv.video import prompt_parts, sample

        _check_fit(options, budget)
        progress(f"sampling {options.video.name}", None)
        video = sample(options.video, options.fps, options.max_frames, budget.frame_size)
        message = Message("user", prompt_parts(video, options.question), video=True)
        result_frames, decoded = [f.time for f in video.frames], video.decoded
    else:
        message = Message.of("user", options.question, images)
    progress("asking", None)
    answer = backend.chat([message], options.max_tokens, on_text=on_text)
    return AskResult(answer, info, result_frames, budget.tokens_per_frame if budget and options.video else None,
                     decoded)
