"""`smolconv ask`: one question to what was built, with images or a video, the answer streamed.

Backends: `llama-server` (a build directory: llama-server on one of its variants, started for the question and
stopped after), `ollama` (a model tag, through Ollama's API), `onnx` and `mlx` (an export folder, in process).
A video goes as SmolVLM2's video prompt (smolconv.media.video): on llama-server through the build's video
projector, on Ollama as `Frame from MM:SS:[img]` lines that its prompt code fills in order. Whether the
frames fit the context is decided before any frame is decoded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from smolconv.checks.backends import BackendRequest, open_backend
from smolconv.core.choices import BackendKind
from smolconv.core.errors import SmolconvError
from smolconv.core.progress import ProgressFn, no_progress
from smolconv.formats.gguf.video_projector import write_video_projector
from smolconv.media.images import load_image
from smolconv.media.video import frame_indices, probe, prompt_parts, sample
from smolconv.plan import PlanSettings, plan_variant
from smolconv.plan.planner import TEXT_RESERVE
from smolconv.record.builddir import BuildDir
from smolconv.record.variants import llama_cpp_frame_tokens, transformers_frame_tokens
from smolconv.runtime.chat import REPEAT_LAST_N, SAMPLING, Answer, Message
from smolconv.runtime.serve import pick_variant

# A frame on a model whose projector ask cannot read (Ollama): SmolVLM2-256M/500M's 512-pixel tile.
DEFAULT_FRAME_SIZE = 512
DEFAULT_TOKENS_PER_TILE = 64
IN_PROCESS_N_CTX = 8192  # an in-process model's context for one question (its own limit permitting)


@dataclass
class AskOptions:
    target: str                           # build directory (llama-server), Ollama tag, ONNX or MLX folder
    question: str
    images: tuple[Path, ...] = ()
    video: Path | None = None
    fps: float = 1.0
    max_frames: int = 64
    backend: BackendKind = BackendKind.LLAMA_SERVER
    variant: str | None = None            # llama-server: Q4_K_M, Q8_0, …; onnx: fp32, q4, …
    max_tokens: int = 512
    url: str | None = None                # a running llama-server, or Ollama (default OLLAMA_HOST)
    settings: PlanSettings = field(default_factory=PlanSettings)
    threads: int | None = None
    api_key: str | None = field(default=None, repr=False)  # a running llama-server's (runtime.auth)
    # None: runtime.chat.SAMPLING's 1.1 over the last 64 tokens (on Ollama, the model's Modelfile's); 1.0 is greedy.
    repeat_penalty: float | None = None


@dataclass
class AskResult:
    answer: Answer | None                 # None until the backend has answered
    backend: dict                         # what answered: the backend's own description
    frames: list[float] = field(default_factory=list)   # the sampled frames' times, seconds
    frame_tokens: int | None = None       # prompt tokens per frame, as planned
    decoded_frames: int = 0
    sampling: dict = field(default_factory=dict)  # what the answer was sampled with (sampling_of)


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
    if options.repeat_penalty is not None and options.repeat_penalty <= 0:
        raise SmolconvError(f"--repeat-penalty {options.repeat_penalty:g} is not a penalty",
                            "use 1.0 for none (--greedy), or more than 1 to discourage repeats")


def backend_sampling(options: AskOptions) -> dict | None:
    """What the backend is told to sample with; None: its default (SAMPLING; on Ollama, temperature and seed only)."""
    return None if options.repeat_penalty is None else {**SAMPLING, "repeat_penalty": options.repeat_penalty}


def sampling_of(options: AskOptions) -> dict:
    """The sampling an answer ran with, as `ask --json` reports it."""
    sent = backend_sampling(options) or SAMPLING
    if options.repeat_penalty is None and options.backend is BackendKind.OLLAMA:
        return {"temperature": sent["temperature"], "seed": sent["seed"],
                "repeat_penalty": "the model's Modelfile (its preset)", "greedy": sent["temperature"] == 0}
    return {**sent, "repeat_last_n": REPEAT_LAST_N,
            "greedy": sent["temperature"] == 0 and sent["repeat_penalty"] == 1.0}


def ask(options: AskOptions, toolchain=None, on_text: Callable[[str], None] | None = None,
        progress: ProgressFn = no_progress) -> AskResult:

    check_request(options)
    images = [load_image(path) for path in options.images]
    video = None
    if options.video:
        video = probe(options.video)  # a file that is no video is refused before any server starts
    if options.backend is BackendKind.LLAMA_SERVER and not options.url:
        return _ask_server(options, video, images, toolchain, on_text, progress)
    served = options.backend in (BackendKind.LLAMA_SERVER, BackendKind.OLLAMA)
    request = BackendRequest(options.backend, options.target, url=options.url, variant=options.variant,
                             threads=options.threads, n_ctx=None if served else IN_PROCESS_N_CTX,
                             api_key=options.api_key, sampling=backend_sampling(options))
    with open_backend(request) as backend:
        info = backend.info()
        if served:  # a server ask did not start: its projector is not ask's to read
            budget = FrameBudget(int(info.get("n_ctx") or 2048), llama_cpp_frame_tokens(DEFAULT_TOKENS_PER_TILE),
                                 DEFAULT_FRAME_SIZE)
        else:
            # In process, a frame is transformers' one tile.
            model = backend.model
            budget = FrameBudget(backend.n_ctx, transformers_frame_tokens(model.image_seq_len), model.tile_size)
        _check_fit(options, video, budget)
        return _ask(backend, info, options, video, images, budget, on_text, progress)


def _ask_server(options: AskOptions, video, images, toolchain, on_text, progress) -> AskResult:
    if not (Path(options.target) / "build.json").is_file():
        raise SmolconvError(f"{options.target} is not a build directory (no build.json)",
                            "pass the --out folder of `smolconv build`, or --backend ollama with a model tag")
    build = BuildDir.open(options.target)
    variant = pick_variant(build, options.variant)
    if video is not None:
        if variant.video_projector_path is None:
            progress("writing the build's video projector", None)
            write_video_projector(build)
            variant = pick_variant(build, variant.name)
        # Frames through the video projector: one tile each instead of a photo's tiling.
        variant = variant.for_video()
    plan = plan_variant(variant, options.settings)
    budget = FrameBudget(plan.num_ctx, variant.projector.video_frame_tokens, variant.projector.image_size)
    _check_fit(options, video, budget)  # before llama-server loads anything
    progress(f"starting llama-server with {variant.name}", None)
    request = BackendRequest(BackendKind.LLAMA_SERVER, options.target, variant=variant, settings=options.settings,
                             threads=options.threads, toolchain=toolchain, sampling=backend_sampling(options))
    with open_backend(request) as backend:
        return _ask(backend, backend.info(), options, video, images, budget, on_text, progress)


def _check_fit(options: AskOptions, video, budget: FrameBudget) -> None:
    """A video whose frames cannot fit is refused in one line (counted from its header: nothing is decoded)."""
    if video is None:
        return

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
        progress(f"sampling {options.video.name}", None)
        sampled = sample(video, options.fps, options.max_frames, budget.frame_size)
        message = Message("user", prompt_parts(sampled, options.question), video=True)
        result = AskResult(None, info, [f.time for f in sampled.frames], budget.tokens_per_frame, sampled.decoded)
    progress("asking", None)
    result.sampling = sampling_of(options)
    result.answer = backend.chat([message], options.max_tokens, on_text=on_text)
    return result
