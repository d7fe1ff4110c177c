"""A served variant at its worst, and the GPU memory its process then holds.

`plan --measure` on a CUDA build and `scripts/bench_gpu.py` send the same requests: the largest image (a
square one: every tile SmolVLM2 makes, plus the overview), then a prompt that fills num_ctx with as many
full-size images as fit and text up to the end. The process's memory is read after each request and, every
SAMPLE_S, while it runs: ggml's CUDA memory pool and cuBLAS should only grow, but a peak inside a request that
is given back before it ends would otherwise go unseen. llama.cpp's buffers alone never show it
(docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from smolconv.checks.smoke import fill_text
from smolconv.core.errors import SmolconvError
from smolconv.core.fsutil import staged_file
from smolconv.media.drawn import draw_scene
from smolconv.media.images import load_image
from smolconv.plan import PlanSettings, Projector, Variant, measure_llama_server
from smolconv.plan.gpu import process_memory
from smolconv.runtime.chat import Answer, BackendError, LlamaServerBackend, Message
from smolconv.runtime.serve import ServeOptions, start_server

LARGEST_IMAGE = (2048, 2048)  # square: the most tiles; any size is resized to the preprocessor's edge first
ANSWER_TOKENS = 32
MARGIN = 64                   # tokens left free beside the answer
SAMPLE_S = 0.1                # how often memory is read while a request runs


@dataclass
class WorstCase:
    """GPU memory (bytes) of the server process at each point; None where it could not be read (`how` says why)."""

    how: str
    idle: int | None = None
    after_image: int | None = None
    after_full_context: int | None = None
    image: Answer | None = None
    full_context: Answer | None = None
    images_in_context: int = 0
    during_requests: int | None = None  # the largest reading taken while a request ran

    @property
    def peak(self) -> int | None:
        values = [v for v in (self.idle, self.after_image, self.after_full_context, self.during_requests)
                  if v is not None]
        return max(values) if values else None

    def to_dict(self) -> dict:
        def answer(a: Answer | None) -> dict | None:
            return None if a is None else {"prompt_tokens": a.prompt_tokens, "prompt_tps": a.prompt_tps,
                                           "decode_tps": a.decode_tps, "wall_s": round(a.wall_s, 3)}

        return {"how": self.how, "idle": self.idle, "after_image": self.after_image,
                "after_full_context": self.after_full_context, "during_requests": self.during_requests,
                "peak": self.peak,
                "images_in_context": self.images_in_context, "image_request": answer(self.image),
                "full_context_request": answer(self.full_context)}


def largest_image(directory: Path) -> Path:
    path = directory / f"largest-{LARGEST_IMAGE[0]}x{LARGEST_IMAGE[1]}.jpg"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        with staged_file(path) as tmp:
            draw_scene(LARGEST_IMAGE).save(tmp, format="JPEG", quality=85)
    return path


def full_context_message(backend, projector: Projector, n_ctx: int, image: Path) -> tuple[Message, int]:
    """As many largest images as fit in num_ctx, and text up to the end; (message, number of images)."""
    per_image = projector.max_image_tokens
    budget = n_ctx - ANSWER_TOKENS - MARGIN
    count = max(1, (budget - 256) // per_image)
    question = "\n\nHow many houses are in these images? Answer in one short sentence."
    text = fill_text(backend, budget - count * per_image, question)
    loaded = load_image(image)
    return Message.of("user", text, [loaded] * count), count


def worst_case(backend: LlamaServerBackend, pid: int, projector: Projector, n_ctx: int,
               images_dir: Path) -> WorstCase:
    """Send the largest image, then the context filled with images; read the process's memory after each."""
    idle, how = process_memory(pid)
    result = WorstCase(how=how, idle=idle)
    image = largest_image(images_dir)
    try:
        with MemorySampler(pid) as sampler:
            result.image = backend.chat([Message.of("user", "Describe this image.", [load_image(image)])],
                                        ANSWER_TOKENS)
            result.after_image = process_memory(pid)[0]
            message, result.images_in_context = full_context_message(backend, projector, n_ctx, image)
            result.full_context = backend.chat([message], ANSWER_TOKENS)
            result.after_full_context = process_memory(pid)[0]
    except BackendError as exc:
        raise SmolconvError(f"llama-server failed a worst-case request ({exc})",
                            "run `smolconv serve` and send the request by hand to see why") from None
    result.during_requests = sampler.peak
    return result


class MemorySampler:
    """Reads `pid`'s GPU memory every SAMPLE_S on a thread while the block runs; `peak` is the largest reading."""

    def __init__(self, pid: int):
        self.pid, self.peak = pid, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpu-memory-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            used = process_memory(self.pid)[0]
            if used is not None:
                self.peak = used if self.peak is None else max(self.peak, used)
            if self._stop.wait(SAMPLE_S):
                return

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def measure_worst_case(toolchain, variant: Variant, settings: PlanSettings, images_dir: Path,
                       num_ctx: int | None = None) -> WorstCase:
    """Serve the variant as `smolconv serve` does (the plan's num_ctx and layers) and push it to its worst."""
    if variant.text_path is None:
        raise SmolconvError("a variant estimated from config dimensions has no files to serve",
                            "build it first, then plan the build directory with --measure")
    options = ServeOptions(variant.text_path.parent, variant.name, port=0, num_ctx=num_ctx, settings=settings)
    with start_server(options, toolchain, variant=variant) as server:
        backend = LlamaServerBackend(server.url)
        return worst_case(backend, server.process.process.pid, variant.projector, server.num_ctx, images_dir)


@dataclass
class PlanMeasurements:
    """`plan --measure`: llama-server's buffers per variant, and on a CUDA build its process's worst case."""

    buffers: dict = field(default_factory=dict)     # variant name → plan.Measured
    worst: dict[str, WorstCase] = field(default_factory=dict)


def measure_plans(plans, toolchain, settings: PlanSettings) -> PlanMeasurements:
    """Start llama-server on each planned variant at its planned context and read what it allocates."""
    import tempfile

    measured = PlanMeasurements()
    with tempfile.TemporaryDirectory() as images:
        for p in plans:
            measured.buffers[p.variant.name] = measure_llama_server(toolchain, p.variant, p.num_ctx, settings)
            if measured.buffers[p.variant.name].on_cuda:
                measured.worst[p.variant.name] = measure_worst_case(toolchain, p.variant, settings, Path(images))
    return measured
