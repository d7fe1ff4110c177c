"""`smolconv ask`: one question to what was built, with images or a video, the answer streamed.

Backends: `server` (a build directory: llama-server on one of its variants, started for the question and
stopped after), `ollama` (a model tag, through Ollama's API), `onnx` and `mlx` (an export folder, in process).
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
from smolconv.plan.planner import TEXT_RESERVE
from smolconv.plan.variants import llama_cpp_frame_tokens, transformers_frame_tokens
from smolconv.progress import ProgressFn, no_progress

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
    answer: Answer | None                 # None until the backend has answered
    backend: dict                         # what answered: the backend's own description
    frames: list[float] = field(default_factory=list)   # the sampled frames' times, seconds
    frame_tokens: int | None = None       # prompt tokens per frame, as planned
    decoded_frames: int = 0


@dataclass(frozen=True)
class FrameBudget:
    n_ctx: int
    tokens_per_frame: int
    frame_size: int

    def frames_that_fit(self, max_tokens: int) -> int:
        return max(0, (self.n_ctx - TEXT_RESERVE - max_tokens) // self.tokens_per_frame)


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
    video = None
    if options.video:
        from smolconv.video import probe

        video = probe(options.video)  # a file that is no video is refused before any server starts
    if options.backend is AskBackend.SERVER:
        return _ask_server(options, video, images, toolchain, on_text, progress)
    if options.backend is AskBackend.OLLAMA:
        from smolconv.chat import OllamaBackend

        backend = OllamaBackend(options.target, options.url)
        info = backend.info()
        budget = FrameBudget(int(info.get("n_ctx") or 2048), llama_cpp_frame_tokens(DEFAULT_TOKENS_PER_TILE),
                             DEFAULT_FRAME_SIZE)
    else:
        if options.backend is AskBackend.MLX:
            from smolconv.mlx.runtime import MlxBackend

            backend = MlxBackend(options.target, n_ctx=8192)
        else:
            from smolconv.onnx.runtime import OnnxBackend

            backend = OnnxBackend(options.target, options.variant or "fp32", n_ctx=8192, threads=options.threads)
        info = backend.info()
        # In process, a frame is transformers' one tile.
        model = backend.model
        budget = FrameBudget(backend.n_ctx, transformers_frame_tokens(model.image_seq_len), model.tile_size)
    _check_fit(options, video, budget)
    return _ask(backend, info, options, video, images, budget, on_text, progress)


def _ask_server(options: AskOptions, video, images, toolchain, on_text, progress) -> AskResult:
    from smolconv.builddir import BuildDir
    from smolconv.chat import LlamaServerBackend
    from smolconv.plan import plan_variant
    from smolconv.serve import ServeOptions, pick_variant, start_server

    if not (Path(options.target) / "build.json").is_file():
        raise SmolconvError(f"{options.target} is not a build directory (no build.json)",
                            "pass the --out folder of `smolconv build`, or --backend ollama with a model tag")
    build = BuildDir.open(options.target)
    variant = pick_variant(build, options.variant)
    if video is not None:
        if variant.video_projector_path is None:
            from smolconv.video_projector import write_video_projector

            progress("writing the build's video projector", None)
            write_video_projector(build)
            variant = pick_variant(build, variant.name)
        # Frames through the video projector: one tile each instead of a photo's tiling.
        variant = variant.for_video()
    plan = plan_variant(variant, options.settings)
    budget = FrameBudget(plan.num_ctx, variant.projector.video_frame_tokens, variant.projector.image_size)
    _check_fit(options, video, budget)  # before llama-server loads anything
    progress(f"starting llama-server with {variant.name}", None)
    serve = ServeOptions(Path(options.target), variant.name, port=0, settings=options.settings,
                         threads=options.threads)
    with start_server(serve, toolchain, variant) as server:
        backend = LlamaServerBackend(server.url)
        return _ask(backend, backend.info(), options, video, images, budget, on_text, progress)


def _check_fit(options: AskOptions, video, budget: FrameBudget) -> None:
    """A video whose frames cannot fit is refused in one line (counted from its header: nothing is decoded)."""
    if video is None:
        return
    from smolconv.video import frame_indices

    count = len(frame_indices(video, options.fps, options.max_frames))
    fit = budget.frames_that_fit(options.max_tokens)
    if count > fit:
        raise SmolconvError(
            f"{count} frames of {options.video.name} need about {count * budget.tokens_per_frame} prompt tokens "
            f"({budget.tokens_per_frame} a frame); the context is {budget.n_ctx} with {options.max_tokens} kept "
            f"for the answer, room for {fit}",
            f"pass --max-frames {fit}" if fit else "use a model with a larger num_ctx (smolconv plan)")


def _ask(backend, info: dict, options: AskOptions, video, images, budget: FrameBudget, on_text,
         progress: ProgressFn) -> AskResult:
    """The question to a backend that is ready; `video` (its header, checked to fit) is sampled here."""
    if video is None:
        message = Message.of("user", options.question, images)
        result = AskResult(None, info)
    else:
        from smolconv.video import prompt_parts, sample

        progress(f"sampling {options.video.name}", None)
        sampled = sample(video, options.fps, options.max_frames, budget.frame_size)
        message = Message("user", prompt_parts(sampled, options.question), video=True)
        result = AskResult(None, info, [f.time for f in sampled.frames], budget.tokens_per_frame, sampled.decoded)
    progress("asking", None)
    result.answer = backend.chat([message], options.max_tokens, on_text=on_text)
    return result
