"""`smolconv smoke`: ask a built model a fixed set of questions, with and without images, and judge the answers.

Backends: llama-server (`/v1/chat/completions`, images as data URIs; smolconv starts the server unless a URL
is given), Ollama (`/api/chat` through the official `ollama` Python client), and onnx (an `export-onnx` folder
run in process by smolconv.formats.onnx.runtime).

Every case must be accepted by the backend, stop by itself (end of utterance, not the token limit) and
contain no chat-template tokens. Image cases must also show that the image reached the model: the prompt
has at least the tokens the projector makes of that image (a model packaged without its projector
answers from the text alone, with a prompt a few dozen tokens long). Expected words ("Paris") are
reported; `strict` (always on in `build`) makes them fail the case too, except an empty reply on a fixture.

On a `smolconv synth` fixture the vision tower is random, so its image answers are noise that may never
stop: there, for image cases only, running to the limit is reported and not judged, and such an answer is cut
at NOISE_MAX_TOKENS (the prompt and the decode rate are measured all the same).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from smolconv import __version__
from smolconv.checks.backends import BackendRequest, open_backend
from smolconv.core.choices import BackendKind
from smolconv.core.errors import SmolconvError
from smolconv.core.fsutil import write_text_atomic
from smolconv.core.hashing import sha256_file
from smolconv.formats.onnx.runtime import folder_variants
from smolconv.media.drawn import write_smoke_images
from smolconv.media.images import load_image
from smolconv.media.video import prompt_parts, sample
from smolconv.plan import PlanSettings, Projector
from smolconv.record.builddir import BuildDir
from smolconv.record.lock import hold_folder
from smolconv.record.manifest import Manifest
from smolconv.record.views import Section
from smolconv.runtime.chat import SAMPLING, Answer, Backend, BackendError, Message
from smolconv.runtime.vlm import folder_projector
from smolconv.source.checkpoint import fixture_info

BACKENDS = tuple(BackendKind)
# Text that must never reach a user: SmolVLM2's template and image tokens, and SmolLM2's ChatML.
TEMPLATE_TOKENS = ("<end_of_utterance>", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<image>",
                   "<fake_token_around_image>", "<global-img>", "<row_")
LONG_PROMPT_MARGIN = 64  # tokens left free beside max_tokens, for the template around the message
# The token limit of an answer that comes out of a fixture's random part: it is not judged, and this many tokens
# still give a decode rate. Decoding a case's full limit of noise was most of a fixture's smoke time.
NOISE_MAX_TOKENS = 16


# --------------------------------------------------------------------------------------------------
# The cases


@dataclass(frozen=True)
class Turn:
    role: str
    text: str
    images: tuple[str, ...] = ()  # keys of the smoke images (or the answer of an earlier case, below)


@dataclass(frozen=True)
class SmokeCase:
    name: str
    what: str                      # one line for the table
    turns: tuple[Turn, ...]
    max_tokens: int = 128
    expect: str | None = None      # a regex a good answer matches (reported; gating with strict)
    follows: str | None = None     # this case's assistant turn is that case's answer
    rejected: bool = False         # smolconv must refuse the input before anything is sent
    long_prompt: bool = False      # the user message is filled to near num_ctx
    per_projector: bool = False    # checks image decoding, preprocessing and the projector: once per projector file
    per_context: bool = False      # checks that the served context holds a near-full prompt: once per context size
    video: bool = False            # its image is a clip, sent as SmolVLM2's video prompt through the video projector

    @property
    def shared_by(self) -> str | None:
        """What this case checks that every variant served alike shares ("projector", "context"), if anything."""
        return "projector" if self.per_projector else "context" if self.per_context else None

    @property
    def has_images(self) -> bool:
        return any(t.images for t in self.turns)


def _user(text: str, *images: str) -> Turn:
    return Turn("user", text, images)


DESCRIBE = "Describe this image."
SCENE_WORDS = r"\b(house|sun|sky|field|grass|landscape|barn|home|building)\b"
CASES: tuple[SmokeCase, ...] = (
    SmokeCase("text_hello", "text: greeting", (_user("Hello, who are you?"),)),
    SmokeCase("text_fact", "text: factual question", (_user("What is the capital of France?"),), 64,
              expect=r"\bParis\b"),
    SmokeCase("image_jpeg", "image: describe a JPEG", (_user(DESCRIBE, "scene_jpeg"),), 160, expect=SCENE_WORDS),
    SmokeCase("image_png", "image: describe a PNG", (_user(DESCRIBE, "scene_png"),), 160, expect=SCENE_WORDS,
              per_projector=True),
    SmokeCase("image_webp", "image: describe a WebP", (_user(DESCRIBE, "scene_webp"),), 160, expect=SCENE_WORDS,
              per_projector=True),
    SmokeCase("two_images", "image: two images in one turn",
              (_user("What is different between these two images?", "scene_png", "night_png"),), 160,
              expect=r"\b(night|dark|moon|day)\b", per_projector=True),
    SmokeCase("follow_up", "image: second turn about the first turn's image",
              (_user(DESCRIBE, "scene_jpeg"), Turn("assistant", ""), _user("What colour is the house?")), 96,
              expect=r"\bred\b", follows="image_jpeg"),
    SmokeCase("blank_image", "edge: a blank white image", (_user(DESCRIBE, "blank_png"),), 160,
              expect=r"\b(white|blank|empty|nothing|plain)\b", per_projector=True),
    SmokeCase("one_pixel", "edge: a 1x1 image", (_user(DESCRIBE, "one_pixel_png"),), 160, per_projector=True),
    SmokeCase("large_image", "edge: a 4000x3000 image", (_user(DESCRIBE, "large_jpeg"),), 160, expect=SCENE_WORDS,
              per_projector=True),
    SmokeCase("corrupt_image", "edge: a corrupt JPEG (refused before sending)",
              (_user(DESCRIBE, "corrupt_jpeg"),), rejected=True),
    SmokeCase("long_prompt", "edge: a prompt near num_ctx", (_user(""),), 64, expect=r"\bred\b",
              long_prompt=True, per_context=True),
    SmokeCase("video", "video: a 4 s clip in SmolVLM2's video prompt, one tile a frame",
              (_user("What moves in this video, and where does it go?", "clip_mp4"),), 64,
              expect=r"\b(square|box|red|right|moves?|moving)\b", video=True),
)
CASE_NAMES = tuple(c.name for c in CASES)


# --------------------------------------------------------------------------------------------------
# Judging


@dataclass
class CaseResult:
    name: str
    what: str
    passed: bool
    reason: str                         # why it passed or failed, in a few words
    answer: Answer | None = None
    expectation: bool | None = None     # did the answer match `expect` (None: no expectation)
    notes: list[str] = field(default_factory=list)
    turns: list[dict] = field(default_factory=list)  # what was sent: roles, texts, image files
    covered_by: str | None = None       # the variant that ran this case (same projector file or context size)

    def to_dict(self) -> dict:
        data = asdict(self)
        return data


def image_tokens(projector: Projector | None, size: tuple[int, int]) -> int:
    """A lower bound on the prompt tokens one image becomes: its tiles times the tokens of a tile
    (the wrapper tokens around each tile are left out)."""
    if projector is None:
        return 64  # the smallest tile SmolVLM2 makes (256M and 500M); 2.2B's are 81
    return projector.tiles(size) * projector.tokens_per_tile


def answers_noise(case: SmokeCase, random_parts: frozenset[str]) -> bool:
    """The case's answer comes out of a random part of a fixture (its text weights, or for an image its vision
    tower): noise, whatever the model it stands for would say."""
    return "text" in random_parts or (case.has_images and "vision" in random_parts)


def answer_limit(case: SmokeCase, random_parts: frozenset[str]) -> int:
    """The tokens a case asks for: its own limit, or NOISE_MAX_TOKENS where the answer is noise."""
    return min(case.max_tokens, NOISE_MAX_TOKENS) if answers_noise(case, random_parts) else case.max_tokens


def judge(case: SmokeCase, answer: Answer, *, min_prompt_tokens: int, max_tokens: int, strict: bool,
          random_parts: frozenset[str] = frozenset()) -> CaseResult:
    """Pass or fail one answer. `random_parts` names what of a smolconv fixture is random ("vision", "text"):
    the answers that come out of a random part are noise, so what they say and whether they stop is noted,
    not judged; that the request worked and the image reached the model still is."""
    notes: list[str] = []
    failures: list[str] = []
    noise = answers_noise(case, random_parts)
    why_noise = ("the fixture's text weights are random" if "text" in random_parts
                 else "the fixture's vision tower is random")
    leaked = [t for t in TEMPLATE_TOKENS if t in answer.text]
    if leaked and "text" in random_parts:  # random text weights emit any token; a real decoder must not
        notes.append(f"answer contains template text {', '.join(leaked)}; not judged: {why_noise}")
    elif leaked:
        failures.append(f"answer contains template text {', '.join(leaked)}")
    if answer.finish_reason == "stop":
        if answer.completion_tokens is not None and answer.completion_tokens > max_tokens:
            failures.append(f"{answer.completion_tokens} tokens, over the limit of {max_tokens}")
    elif noise:
        notes.append(f"ran to the {max_tokens}-token limit ({answer.finish_reason}); not judged: {why_noise}, "
                     "so its answers are noise")
    else:
        failures.append(f"did not stop by itself within {max_tokens} tokens (finish: {answer.finish_reason})")
    if min_prompt_tokens and (answer.prompt_tokens or 0) < min_prompt_tokens:
        failures.append(f"prompt was {answer.prompt_tokens} tokens, expected at least {min_prompt_tokens}: "
                        "the image did not reach the model (projector missing?)")
    empty = not answer.text.strip()
    if empty:
        notes.append("empty answer: the model ended its turn at once")
    # Every fixture has a random vision tower, so random_parts is empty exactly for a real checkpoint. The 256m
    # fixture's real text weights were Q4_1 before smolconv requantized them; its Q4_K_M and Q5_K_M end the turn
    # before answering (README, Fixture checkpoints). An empty reply there is not judged; any other wrong answer is.
    empty_on_fixture = empty and bool(random_parts)
    expectation = None
    if case.expect:
        expectation = re.search(case.expect, answer.text, re.IGNORECASE) is not None
        if not expectation and strict and not noise and not empty_on_fixture:
            failures.append(f"answer does not match /{case.expect}/")
        elif not expectation:
            why = (" (not judged: an empty reply on a smolconv fixture)" if strict and empty_on_fixture and not noise
                   else "")
            notes.append(f"answer does not match /{case.expect}/{why}")
    if failures:
        return CaseResult(case.name, case.what, False, "; ".join(failures), answer, expectation, notes)
    reason = "stopped by itself, no template text" if answer.finish_reason == "stop" else "answered (not judged)"
    return CaseResult(case.name, case.what, True, reason, answer, expectation, notes)


# --------------------------------------------------------------------------------------------------
# Running the suite


@dataclass
class SmokeOptions:
    target: str                          # a build directory, or an Ollama model tag
    backend: BackendKind = BackendKind.LLAMA_SERVER
    types: tuple[str, ...] = ()          # variants of a build (default: every quantized variant)
    url: str | None = None               # a running llama-server, or the Ollama host
    report_dir: Path | None = None       # default: <build>/smoke, or ./smoke for a tag
    cases: tuple[str, ...] = ()          # default: all
    strict: bool = False
    num_ctx: int | None = None           # llama-server started by smoke: default the plan's
    settings: PlanSettings = field(default_factory=PlanSettings)
    threads: int | None = None
    images_dir: Path | None = None       # default: <report_dir>/images
    wait: bool = False                # another smolconv writing the folder: wait for it (else refuse)


@dataclass
class SmokeReport:
    target: str
    variant: str
    backend: str
    backend_info: dict
    results: list[CaseResult]
    random_parts: frozenset[str]       # what of a smolconv fixture is random ("vision", "text"); empty for a model
    started: str
    seconds: float
    path: Path | None = None

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def to_dict(self) -> dict:
        return {"smolconv": __version__, "target": self.target, "variant": self.variant,
                "backend": self.backend, "backend_info": self.backend_info, "passed": self.passed,
                "random_parts": sorted(self.random_parts), "sampling": SAMPLING, "started": self.started,
                "seconds": round(self.seconds, 2), "cases": [r.to_dict() for r in self.results]}

    def summary(self) -> dict:
        """The short form that goes into build.json."""
        return {"backend": self.backend, "passed": self.passed, "report": str(self.path) if self.path else None,
                "seconds": round(self.seconds, 2), "failed": [r.name for r in self.results if not r.passed],
                "decode_tps": _median([r.answer.decode_tps for r in self.results if r.answer]),
                "ttft_s": _median([r.answer.ttft_s for r in self.results if r.answer and not r.answer.cached_tokens]),
                "covered_by": {r.name: r.covered_by for r in self.results if r.covered_by}}


def _median(values: list[float | None]) -> float | None:
    values = sorted(v for v in values if v is not None)
    return round(values[len(values) // 2], 3) if values else None


def _filler(n: int) -> str:
    # No numbering: every sentence is the same tokens, so the count grows exactly linearly.
    return " ".join(["The red house stands by the green field under a yellow sun."] * n)


def fill_text(backend: Backend, tokens: int, question: str) -> str:
    """Filler sentences and `question` that make a user message of about `tokens` prompt tokens (the chat
    template around it included).

    The backend counts (both report prompt tokens), so this holds for any tokenizer: two short requests
    give the tokens of one filler sentence and of the rest of the prompt."""
    counts = []
    for n in (8, 16):
        answer = backend.chat([Message.of("user", _filler(n) + question)], 1)
        if not answer.prompt_tokens:
            raise BackendError("the backend does not report prompt token counts")
        counts.append(answer.prompt_tokens)
    per_sentence = (counts[1] - counts[0]) / 8
    fixed = counts[0] - 8 * per_sentence
    n = max(1, int((tokens - fixed) / per_sentence))
    return _filler(n) + question


def _long_prompt(backend: Backend, n_ctx: int, max_tokens: int) -> str:
    """A user message that fills the context to num_ctx - max_tokens - a small margin."""
    question = "\n\nWhat colour is the house in the text above? Answer in one short sentence."
    return fill_text(backend, n_ctx - max_tokens - LONG_PROMPT_MARGIN, question)


def run_suite(backend: Backend, images: dict[str, Path], *, n_ctx: int | None, projector: Projector | None,
              cases: tuple[SmokeCase, ...] = CASES, strict: bool = False, random_parts: frozenset[str] = frozenset(),
              progress=lambda stage: None) -> list[CaseResult]:
    results: dict[str, CaseResult] = {}
    for case in cases:
        progress(f"{backend.name}: {case.name}")
        results[case.name] = run_case(backend, case, images, results, n_ctx=n_ctx, projector=projector,
                                      strict=strict, random_parts=random_parts)
    return list(results.values())


def run_case(backend: Backend, case: SmokeCase, images: dict[str, Path], earlier: dict[str, CaseResult], *,
             n_ctx: int | None, projector: Projector | None, strict: bool, random_parts: frozenset[str]) -> CaseResult:
    sent_before = backend.requests
    # Every image is read and checked before anything is sent.
    try:
        messages = []
        for turn in case.turns:
            text = turn.text
            if turn.role == "assistant" and case.follows:
                previous = earlier.get(case.follows)
                if previous is None or previous.answer is None:
                    return CaseResult(case.name, case.what, False, f"needs the answer of {case.follows}, which failed")
                text = previous.answer.text
            if case.video:
                video = sample(images[turn.images[0]], frame_size=projector.image_size if projector else 512)
                messages.append(Message(turn.role, prompt_parts(video, text), video=True))
            else:
                messages.append(Message.of(turn.role, text, [load_image(images[key]) for key in turn.images]))
    except SmolconvError as exc:
        if case.rejected and backend.requests == sent_before:
            return CaseResult(case.name, case.what, True, "refused before sending", notes=[exc.one_line()])
        return CaseResult(case.name, case.what, False, exc.one_line())
    if case.rejected:
        return CaseResult(case.name, case.what, False, "a corrupt image was accepted")
    sent = [{"role": m.role, "text": m.text if len(m.text) < 300 else m.text[:300] + f"... ({len(m.text)} characters)",
             "images": [str(i.path.name) for i in m.images]} for m in messages]

    min_prompt = 0
    try:
        if case.long_prompt:
            if not n_ctx:
                return CaseResult(case.name, case.what, False, "the backend did not say its context size")
            messages = [Message.of("user", _long_prompt(backend, n_ctx, case.max_tokens))]
            min_prompt = int(0.9 * (n_ctx - case.max_tokens - LONG_PROMPT_MARGIN))
        elif case.video:
            # Each frame through the video projector: its tile and the overview llama.cpp adds beside it; in
            # process, transformers' one tile.
            tiles = 1 if getattr(backend, "native_video", False) else 2
            min_prompt = tiles * (projector.tokens_per_tile if projector else 64) * sum(len(m.images) for m in messages)
        else:
            min_prompt = sum(image_tokens(projector, image.size) for m in messages for image in m.images)
        limit = answer_limit(case, random_parts)
        answer = backend.chat(messages, limit)
    except BackendError as exc:
        return CaseResult(case.name, case.what, False, f"backend error: {exc}", turns=sent)
    result = judge(case, answer, min_prompt_tokens=min_prompt, max_tokens=limit, strict=strict,
                   random_parts=random_parts)
    result.turns = sent
    if case.follows and answer.prompt_tokens:
        first = earlier[case.follows].answer
        cached = f", {answer.cached_tokens} of them reused from the cache" if answer.cached_tokens else ""
        result.notes.append(f"turn 2 prompt {answer.prompt_tokens} tokens (turn 1: {first.prompt_tokens}){cached}: "
                            "the first turn's image is sent again with the history and stays in the prompt")
    if case.long_prompt:
        result.notes.append(f"prompt {answer.prompt_tokens} tokens of num_ctx {n_ctx}")
    if case.video:
        frames = sum(len(m.images) for m in messages)
        result.notes.append(f"{frames} frames, prompt {answer.prompt_tokens} tokens (at least {min_prompt})")
    return result


def _write_report(report: SmokeReport, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    return path


def _select_cases(names: tuple[str, ...]) -> tuple[SmokeCase, ...]:
    if not names:
        return CASES
    unknown = [n for n in names if n not in CASE_NAMES]
    if unknown:
        raise SmolconvError(f"no smoke case {unknown[0]!r}", f"choose from {', '.join(CASE_NAMES)}")
    wanted = set(names)
    # A follow-up needs the case it follows.
    wanted |= {c.follows for c in CASES if c.name in wanted and c.follows}
    return tuple(c for c in CASES if c.name in wanted)


def _random_parts(manifest: Manifest | None) -> frozenset[str]:
    """What of the build's checkpoint is random, from the marker `synth` leaves in a fixture."""

    checkpoint = manifest.source.checkpoint if manifest is not None else None
    info = fixture_info(checkpoint) if checkpoint else None
    return frozenset(part for part in ("vision", "text") if info and info.get(part) == "random")


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def smoke(options: SmokeOptions, toolchain=None, progress=lambda stage, fraction=None: None,
          build: BuildDir | None = None, keys: dict[str, str] | None = None) -> list[SmokeReport]:
    """Run the suite on each variant of a build (llama-server) or each packaged tag (Ollama).

    `keys`: per variant, what its result depends on (pipeline's check key), recorded with it in build.json."""
    if options.backend not in BACKENDS:
        raise SmolconvError(f"unknown backend {options.backend!r}", f"use one of {', '.join(BACKENDS)}")
    cases = _select_cases(options.cases)
    target_dir = Path(options.target) if Path(options.target).is_dir() else None
    held = hold_folder(target_dir, wait=options.wait, on_wait=lambda text: progress(text, None)) if target_dir \
        else contextlib.nullcontext()  # an Ollama tag: no folder of smolconv's to write
    with held:
        report_dir = options.report_dir or ((target_dir / "smoke") if target_dir else Path("smoke"))
        images = write_smoke_images(options.images_dir or report_dir / "images")
        if target_dir is not None and build is None:
            build = BuildDir.open(target_dir)
        manifest = build.manifest if build is not None else None
        reports = smoke_runs(_runs(options, target_dir, toolchain, manifest, build, cases), options, cases, images,
                             random_parts=_random_parts(manifest), report_dir=report_dir,
                             progress=lambda stage: progress(stage, None))
        if build is not None:
            _record(build, reports, keys or {})
        return reports


def smoke_runs(runs, options: SmokeOptions, cases: tuple[SmokeCase, ...], images: dict[str, Path], *,
               random_parts: frozenset[str], report_dir: Path, progress=lambda stage: None) -> list[SmokeReport]:
    """The suite on each SmokeRun, its backend opened for the run and closed after it. Every variant of a build shares
    one projector file: the cases that check image decoding, preprocessing and the projector (`per_projector`)
    run on the first variant served with that file; the long prompt (`per_context`), which checks that the served
    context holds a near-full prompt, runs on the first variant served with that context size (the KV cache and
    its settings are the same for every variant of one call). The others report such cases as covered by that
    variant, with its result. Text cases, one image case (where the variant's own text weights meet image
    embeddings) and its follow-up run on every variant."""
    first: dict[tuple[str, object], tuple[str, dict[str, CaseResult]]] = {}  # (shared_by, key) -> variant, results
    reports = []
    for run in runs:
        started = datetime.now(UTC).isoformat(timespec="seconds")
        t0 = time.monotonic()
        variant_name, projector = run.name, run.projector
        with open_backend(run.request) as backend:
            # A run on a video projector takes the video cases, every other run the rest; a backend that takes a
            # video's frames as they are (in process: one tile each) takes both.
            video_run = projector is not None and projector.one_tile_frames
            native = getattr(backend, "native_video", False)
            run_cases = cases if native else tuple(c for c in cases if c.video == video_run)
            info = backend.info()
            n_ctx = getattr(backend, "n_ctx", None) or info.get("n_ctx")
            shared = {"projector": run.projector_sha256, "context": n_ctx}
            covered = {c.name: (first[key], key) for c in run_cases
                       if c.shared_by and (key := (c.shared_by, shared[c.shared_by])) in first}
            todo = tuple(c for c in run_cases if c.name not in covered)
            ran = run_suite(backend, images, n_ctx=n_ctx, projector=projector, cases=todo, strict=options.strict,
                            random_parts=random_parts, progress=progress)
        by_name = {r.name: r for r in ran}
        for kind, key in shared.items():
            if key and any(c.shared_by == kind for c in todo):
                first.setdefault((kind, key), (variant_name, by_name))
        results = [by_name[c.name] if c.name in by_name else _covered(*covered[c.name], c.name) for c in run_cases]
        report = SmokeReport(target=options.target, variant=variant_name, backend=options.backend,
                             backend_info=info, results=results, random_parts=random_parts, started=started,
                             seconds=time.monotonic() - t0)
        report.path = _write_report(report, report_dir / f"{_safe_name(variant_name)}.{options.backend}.json")
        reports.append(report)
    return reports


def _covered(ran_on: tuple[str, dict[str, CaseResult]], shared: tuple[str, object], name: str) -> CaseResult:
    """A case another variant ran on the same projector file or context size: its verdict, and where."""
    variant, results = ran_on
    result = results[name]
    kind, key = shared
    same = f"same projector sha256 {key[:12]}" if kind == "projector" else f"same context, {key} tokens"
    return CaseResult(result.name, result.what, result.passed, f"covered by {variant} ({same}): {result.reason}",
                      expectation=result.expectation, covered_by=variant)


def _projector_sha256(manifest: Manifest | None, path: Path | None) -> str | None:
    """From build.json, which recorded it when the file was written; hashed here only for a file it does not list."""

    if path is None or not path.is_file():
        return None
    return (manifest.recorded_sha256(path.name) if manifest is not None else None) or sha256_file(path)


def _record(build: BuildDir, reports: list[SmokeReport], keys: dict[str, str]) -> None:
    if not build.manifest.has_steps():
        return  # not a build directory smolconv wrote
    record = build.manifest.section(Section.SMOKE) or {}
    for report in reports:
        key = keys.get(report.variant)
        record[f"{report.variant}:{report.backend}"] = report.summary() | ({"key": key} if key else {})
    build.manifest.set_section(Section.SMOKE, record)
    build.save()


@dataclass
class SmokeRun:
    """One run of the suite: the backend to open, what the report calls it, and what its projector is."""

    name: str
    request: BackendRequest
    projector: Projector | None = None
    projector_sha256: str | None = None


def _runs(options: SmokeOptions, target_dir: Path | None, toolchain, manifest: Manifest | None, build: BuildDir | None,
          cases: tuple[SmokeCase, ...] = CASES) -> Iterator[SmokeRun]:
    """One SmokeRun per suite run. The video cases get a run of their own: the first variant with the video
    projector (`<variant>-video`), once a build."""
    images, videos = any(not c.video for c in cases), any(c.video for c in cases)
    kind = BackendKind(options.backend)
    if kind in (BackendKind.ONNX, BackendKind.MLX):
        if target_dir is None:
            raise SmolconvError(f"{options.target} is not a directory", f"pass a folder `smolconv export-{kind}` wrote")
        projector = folder_projector(target_dir)
        # Each ONNX variant has its own vision graph: nothing is shared.
        variants = (options.types or folder_variants(target_dir)) if kind is BackendKind.ONNX else ("mlx",)
        for variant in variants:
            request = BackendRequest(kind, target_dir, variant=variant.lower(), n_ctx=options.num_ctx,
                                     threads=options.threads)
            yield SmokeRun(variant.lower(), request, projector)
        return
    # For the backends that get no variant (a served variant carries its own projector): the build's.
    built = build.variants()[0] if build is not None and (kind is BackendKind.OLLAMA or options.url) else None
    if kind is BackendKind.OLLAMA:
        # The tags of one build were packaged with its one projector file.
        sha256 = _projector_sha256(manifest, built.projector_path) if built else None
        for tag, preset in _ollama_tags(options, target_dir, manifest):
            request = BackendRequest(kind, tag, url=options.url)
            if preset == "video" and videos and built is not None and built.video_projector_path is not None:
                video = built.for_video()
                yield SmokeRun(tag, request, video.projector, _projector_sha256(manifest, video.projector_path))
            elif preset != "video" and images:
                yield SmokeRun(tag, request, built and built.projector, sha256)
        return
    if options.url:
        name = options.types[0] if options.types else "llama-server"
        yield SmokeRun(name, BackendRequest(kind, url=options.url), built and built.projector)
        return
    if target_dir is None:
        raise SmolconvError(f"{options.target} is not a build directory",
                            "pass a directory `smolconv build` wrote, or --url of a running llama-server")
    if toolchain is None:
        raise SmolconvError("starting llama-server needs the llama.cpp toolchain", "run `smolconv setup`")
    variants = build.variants(options.types)
    if not options.types:
        variants = [v for v in variants if v.name != "F16"] or variants  # the products, not the intermediate

    def served(variant, name: str) -> SmokeRun:
        request = BackendRequest(kind, target_dir, variant=variant, n_ctx=options.num_ctx, settings=options.settings,
                                 threads=options.threads, toolchain=toolchain)
        return SmokeRun(name, request, variant.projector, _projector_sha256(manifest, variant.projector_path))

    for variant in variants if images else ():
        yield served(variant, variant.name)
    if videos and variants and variants[0].video_projector_path is not None:
        video = variants[0].for_video()
        yield served(video, f"{video.name}-video")


def _ollama_tags(options: SmokeOptions, target_dir: Path | None, manifest: Manifest | None) -> list[tuple[str, str]]:
    """(tag, preset) of the models to smoke: the general one of each variant, and its video model."""
    if target_dir is None:
        return [(options.target, "general")]
    models = ((manifest.section(Section.PACKAGE) if manifest is not None else None) or {}).get("models", [])
    wanted = {t.upper() for t in options.types}
    tags = [(m["tag"], m.get("preset", "general")) for m in models if m.get("preset", "general") in ("general", "video")
            and (not wanted or m.get("variant", "").upper() in wanted)]
    if not tags:
        raise SmolconvError(f"{target_dir} has no packaged models",
                            "run `smolconv package --create` first, or pass an Ollama model tag")
    return tags
