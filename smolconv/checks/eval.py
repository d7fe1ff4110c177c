"""`smolconv eval`: the user's own cases on every variant and runtime, and on the reference, in one table.

Targets: a build directory (each variant on llama-server, or with `--backend ollama` the models `package --create`
made of it), an Ollama model tag (`--backend ollama`), an `export-onnx` folder (each variant in onnxruntime) and an
`export-mlx` folder (MLX), several in one run. The reference is transformers in float32 on the checkpoint the targets
were made from (with the adapter unmerged through peft where the build has one), unless `reference=False`.

Every runtime decodes greedily (temperature 0, no repeat penalty: runtime.chat.GREEDY), so an answer is the model's
most likely one and two runtimes differ only where their numbers do. Two measures per run:

- accuracy: the share of the labelled cases (those with `expect`) whose answer passes (smolconv.checks.cases);
- agreement with the reference, on every case, labelled or not: the answer equals transformers' after whitespace
  normalisation, and, apart, the answer's first token is transformers' first token (both answers read by the
  checkpoint's tokenizer; an empty answer's first token is the end of the turn).

Gates (`EvalGates`): a least accuracy, and a largest drop of accuracy below the reference's, in percentage points. A
gate that fails is data (`EvalReport.passed`); the CLI exits 1 on it, and `build --cases` does not publish.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from smolconv import __version__
from smolconv.checks.backends import BackendRequest, open_backend
from smolconv.checks.cases import (
    DEFAULT_MAX_TOKENS,
    CaseSet,
    DatasetSpec,
    EvalCase,
    normalise,
    read_cases,
    read_dataset,
)
from smolconv.checks.eval_plot import write_plot
from smolconv.checks.reference_chat import TransformersBackend
from smolconv.core.choices import BackendKind
from smolconv.core.errors import SmolconvError
from smolconv.core.fsutil import write_text_atomic
from smolconv.core.progress import ProgressFn, no_progress
from smolconv.formats.gguf.video_projector import write_video_projector
from smolconv.formats.onnx.runtime import GRAPHS, VARIANT_SUFFIX, folder_variants
from smolconv.media.video import DEFAULT_FPS, DEFAULT_MAX_FRAMES
from smolconv.plan import PlanSettings
from smolconv.record.builddir import BuildDir
from smolconv.record.manifest import Manifest
from smolconv.record.views import Section
from smolconv.runtime.chat import GREEDY, BackendError

REFERENCE = "transformers"      # the reference run's runtime
DEFAULT_N_CTX = 8192            # every runtime's context for one case (an image on 256M/500M: about 1100 tokens)
DEFAULT_FRAME_SIZE = 512        # a video frame where the backend does not say (Ollama): 256M/500M's tile


@dataclass
class EvalGates:
    min_accuracy: float | None = None  # percent: every variant's accuracy at least this
    max_drop: float | None = None      # percentage points: no variant's accuracy further below the reference's

    @property
    def any(self) -> bool:
        return self.min_accuracy is not None or self.max_drop is not None


@dataclass
class EvalOptions:
    targets: tuple[str, ...]
    cases: Path | None = None            # a JSONL cases file …
    dataset: DatasetSpec | None = None   # … or a dataset
    backend: BackendKind | None = None   # None: each target's own (build → llama-server, ONNX, MLX); ollama: see above
    # Variants to run (a build's Q4_K_M, an ONNX folder's q4, …), matched per target without case; default: all (a
    # build's quantized ones). A target must hold at least one of them; an MLX folder is its one variant.
    types: tuple[str, ...] = ()
    reference: bool = True
    checkpoint: Path | None = None       # the reference's checkpoint (default: the one the targets record)
    gates: EvalGates = field(default_factory=EvalGates)
    max_tokens: int = DEFAULT_MAX_TOKENS  # for the cases that set none
    num_ctx: int = DEFAULT_N_CTX
    fps: float = DEFAULT_FPS
    max_frames: int = DEFAULT_MAX_FRAMES
    url: str | None = None               # the Ollama host (default OLLAMA_HOST)
    settings: PlanSettings = field(default_factory=PlanSettings)
    threads: int | None = None
    report_dir: Path | None = None       # default: eval/ in the first build directory among the targets
    name: str | None = None              # the report's name (default: the cases file's)

    def settings_key(self) -> dict:
        """What a run's answers depend on beside the files and the cases: build's eval key holds it."""
        return {"sampling": GREEDY, "max_tokens": self.max_tokens, "num_ctx": self.num_ctx, "fps": self.fps,
                "max_frames": self.max_frames, "reference": self.reference, "gates": asdict(self.gates),
                "types": list(self.types), "backend": self.backend and str(self.backend)}


# --------------------------------------------------------------------------------------------------
# Results


@dataclass
class CaseAnswer:
    text: str | None                     # None: the backend failed (error says why)
    error: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    wall_s: float | None = None
    correct: bool | None = None          # None: an unlabelled case
    agrees: bool | None = None           # None: no reference (or this is the reference)
    first_token_agrees: bool | None = None


@dataclass
class RunResult:
    label: str                           # how the table and the picture name it: "Q4_K_M llama-server"
    runtime: str                         # a BackendKind value, or "transformers"
    target: str
    variant: str
    size_bytes: int | None               # the files this run loaded (None: not known, e.g. a bare Ollama tag)
    answers: dict[str, CaseAnswer] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    seconds: float = 0.0                 # the whole run: starting the backend, every case, stopping it

    @property
    def is_reference(self) -> bool:
        return self.runtime == REFERENCE

    def _share(self, values: list[bool | None]) -> float | None:
        known = [v for v in values if v is not None]
        return sum(known) / len(known) if known else None

    @property
    def accuracy(self) -> float | None:
        return self._share([a.correct for a in self.answers.values()])

    @property
    def correct(self) -> int:
        return sum(bool(a.correct) for a in self.answers.values())

    @property
    def labelled(self) -> int:
        return sum(a.correct is not None for a in self.answers.values())

    @property
    def agreement(self) -> float | None:
        return self._share([a.agrees for a in self.answers.values()])

    @property
    def first_token_agreement(self) -> float | None:
        return self._share([a.first_token_agrees for a in self.answers.values()])

    @property
    def answer_seconds(self) -> float:
        return sum(a.wall_s or 0.0 for a in self.answers.values())

    def summary(self) -> dict:
        return {"label": self.label, "runtime": self.runtime, "target": self.target, "variant": self.variant,
                "size_bytes": self.size_bytes, "accuracy": self.accuracy, "correct": self.correct,
                "labelled": self.labelled, "agreement": self.agreement,
                "first_token_agreement": self.first_token_agreement, "seconds": round(self.seconds, 2),
                "answer_seconds": round(self.answer_seconds, 2),
                "errors": sum(a.error is not None for a in self.answers.values())}


@dataclass
class EvalReport:
    cases: CaseSet
    runs: list[RunResult]
    gates: EvalGates
    settings: dict
    reference: dict | None = None        # the reference's checkpoint and adapter
    notes: list[str] = field(default_factory=list)
    started: str = ""
    seconds: float = 0.0
    path: Path | None = None
    plot: Path | None = None

    @property
    def reference_run(self) -> RunResult | None:
        return next((r for r in self.runs if r.is_reference), None)

    @property
    def variants(self) -> list[RunResult]:
        return [r for r in self.runs if not r.is_reference]

    @property
    def failures(self) -> list[str]:
        problems = []
        reference = self.reference_run
        for run in self.variants:
            accuracy = run.accuracy
            if accuracy is None:
                continue
            if self.gates.min_accuracy is not None and 100 * accuracy < self.gates.min_accuracy - 1e-9:
                problems.append(f"{run.label}: accuracy {100 * accuracy:.1f}% ({run.correct}/{run.labelled}) is "
                                f"under --min-accuracy {self.gates.min_accuracy:g}%")
            if self.gates.max_drop is not None and reference is not None and reference.accuracy is not None:
                drop = 100 * (reference.accuracy - accuracy)
                if drop > self.gates.max_drop + 1e-9:
                    problems.append(f"{run.label}: accuracy {100 * accuracy:.1f}% is {drop:.1f} points under the "
                                    f"reference's {100 * reference.accuracy:.1f}% (--max-drop {self.gates.max_drop:g})")
        return problems

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        labels = [r.label for r in self.runs]
        return {
            "name": self.cases.name, "cases_file": self.cases.source, "cases_sha256": self.cases.sha256,
            "passed": self.passed, "failures": self.failures, "gates": asdict(self.gates),
            "settings": self.settings, "reference": self.reference, "notes": self.notes,
            "smolconv": __version__, "started": self.started, "seconds": round(self.seconds, 2),
            "plot": self.plot.name if self.plot else None,
            "runs": [r.summary() | {"info": r.info} for r in self.runs],
            "cases": [c.describe() | {"answers": {label: asdict(run.answers[c.id]) for label, run
                                                  in zip(labels, self.runs, strict=True) if c.id in run.answers}}
                      for c in self.cases.cases],
        }

    def summary(self) -> dict:
        """What build.json keeps (and the model card shows): each run's measures, no answers."""
        return {"passed": self.passed, "failures": self.failures, "cases_file": Path(self.cases.source).name,
                "cases_sha256": self.cases.sha256, "cases": len(self.cases.cases),
                "labelled": len(self.cases.labelled), "gates": asdict(self.gates),
                "report": self.path.name if self.path else None, "plot": self.plot.name if self.plot else None,
                "runs": [r.summary() for r in self.runs]}


# --------------------------------------------------------------------------------------------------
# What runs


@dataclass
class EvalRun:
    """One runtime and variant to ask every case: the backend to open (and, for a build's video cases on
    llama-server, the server with its video projector)."""

    label: str
    runtime: str
    target: str
    variant: str
    request: BackendRequest | None       # None: the reference
    size_bytes: int | None = None
    frame_size: int = DEFAULT_FRAME_SIZE
    video_request: BackendRequest | None = None


def load_cases(options: EvalOptions) -> CaseSet:
    if (options.cases is None) == (options.dataset is None):
        raise SmolconvError("eval needs --cases FILE or --dataset ID_OR_FILE (one of them)",
                            "write a JSONL cases file (examples/cases.jsonl), or name a dataset")
    cases = read_cases(options.cases) if options.cases is not None else read_dataset(options.dataset)
    if options.name:
        cases.name = options.name
    return cases


def check_request(options: EvalOptions, cases: CaseSet) -> None:
    """Refuse, before any model starts, what cannot give an answer."""
    gates = options.gates
    if not options.targets:
        raise SmolconvError("eval needs a target", "pass a build directory, an ONNX or MLX folder, or an Ollama tag")
    if options.max_tokens < 1:
        raise SmolconvError(f"--max-tokens {options.max_tokens} generates nothing", "use 1 or more")
    if gates.min_accuracy is not None and not 0 <= gates.min_accuracy <= 100:
        raise SmolconvError(f"--min-accuracy {gates.min_accuracy:g} is not a percentage", "use 0 to 100, e.g. 90")
    if gates.max_drop is not None and not 0 <= gates.max_drop <= 100:
        raise SmolconvError(f"--max-drop {gates.max_drop:g} is not in percentage points",
                            "use 0 to 100, e.g. 5 (points of accuracy below the reference)")
    if gates.any and not cases.labelled:
        raise SmolconvError(f"--min-accuracy and --max-drop judge accuracy, and no case in {cases.source} has "
                            "an `expect`", "add `expect` to some cases, or leave the gates out")
    if gates.max_drop is not None and not options.reference:
        raise SmolconvError("--max-drop measures against the reference, and --no-reference leaves it out",
                            "drop one of them")


def _pick(names: list[str], types: tuple[str, ...], target: str) -> list[str]:
    """The variants of one target that `types` names (matched without case); all of them when types is empty."""
    if not types:
        return names
    by_lower = {n.lower(): n for n in names}
    chosen = [by_lower[t.lower()] for t in types if t.lower() in by_lower]
    if not chosen:
        raise SmolconvError(f"{target} has none of the variants {', '.join(types)}",
                            f"it holds {', '.join(names) or 'none'}; pass --type with one of them")
    return list(dict.fromkeys(chosen))


def target_kind(target: str, backend: BackendKind | None) -> BackendKind:
    path = Path(target)
    if backend is BackendKind.OLLAMA:
        return BackendKind.OLLAMA
    if not path.is_dir():
        raise SmolconvError(f"{target} is not a directory",
                            "pass a build directory, an export-onnx or export-mlx folder, or an Ollama model tag "
                            "with --backend ollama")
    manifest = Manifest.load(path)
    if (path / "onnx").is_dir():
        kind = BackendKind.ONNX
    elif manifest.section(Section.MLX) or (not manifest.has_steps() and (path / "config.json").is_file()
                                           and any(path.glob("*.safetensors"))):
        kind = BackendKind.MLX
    elif manifest.step("convert") is not None:
        kind = BackendKind.LLAMA_SERVER
    else:
        raise SmolconvError(f"{target} is not a build directory, an ONNX folder or an MLX folder",
                            "pass what `smolconv build`, `export-onnx` or `export-mlx` wrote")
    if backend is not None and backend is not kind:
        raise SmolconvError(f"{target} is an {kind} target, not {backend}",
                            "leave out --backend (each target runs on its own runtime), or use --backend ollama")
    return kind


def _size(paths) -> int | None:
    paths = [Path(p) for p in paths if p is not None]
    return sum(p.stat().st_size for p in paths if p.is_file()) or None


def _onnx_size(folder: Path, variant: str) -> int | None:
    suffix = VARIANT_SUFFIX[variant]
    return _size([p for g in GRAPHS for p in (folder / "onnx").glob(f"{g}{suffix}.onnx*")])


def plan_runs(options: EvalOptions, toolchain, cases: CaseSet) -> list[EvalRun]:
    """Every run of the targets, checked (a missing folder, variant or toolchain) before any model starts."""
    runs = []
    videos = cases.has_video
    for target in options.targets:
        kind = target_kind(target, options.backend)
        path = Path(target)
        if kind is BackendKind.LLAMA_SERVER:
            if toolchain is None:
                raise SmolconvError("starting llama-server needs the llama.cpp toolchain", "run `smolconv setup`")
            build = BuildDir.open(path)
            variants = {v.name: v for v in build.variants()}
            products = [n for n in variants if n != "F16"] or list(variants)
            names = _pick(list(variants), options.types, target) if options.types else products
            for name in names:
                variant = variants[name]
                request = BackendRequest(kind, path, variant=variant, n_ctx=options.num_ctx, settings=options.settings,
                                         threads=options.threads, toolchain=toolchain, sampling=GREEDY)
                run = EvalRun(f"{name} llama-server", str(kind), target, name, request,
                              _size([variant.text_path, variant.projector_path, variant.adapter_path]))
                if videos:
                    if variant.video_projector_path is None:
                        write_video_projector(build)
                        variant = build.variant(name)
                    video = variant.for_video()
                    run.frame_size = video.projector.image_size
                    run.video_request = BackendRequest(kind, path, variant=video, n_ctx=options.num_ctx,
                                                       settings=options.settings, threads=options.threads,
                                                       toolchain=toolchain, sampling=GREEDY)
                runs.append(run)
        elif kind is BackendKind.ONNX:
            for name in _pick(folder_variants(path), options.types, target):
                request = BackendRequest(kind, path, variant=name, n_ctx=options.num_ctx, threads=options.threads,
                                         sampling=GREEDY)
                runs.append(EvalRun(f"{name} onnx", str(kind), target, name, request, _onnx_size(path, name)))
        elif kind is BackendKind.MLX:  # one variant, whatever --type names
            request = BackendRequest(kind, path, n_ctx=options.num_ctx, sampling=GREEDY)
            runs.append(EvalRun("mlx", str(kind), target, "mlx", request, _size(path.glob("*.safetensors"))))
        else:
            runs += _ollama_runs(options, target)
    labels = [r.label for r in runs]
    for run in runs:  # two targets with the same variant name (two builds): the folder tells them apart
        if labels.count(run.label) > 1:
            run.label = f"{run.label} ({Path(run.target).name})"
    return runs


def _ollama_runs(options: EvalOptions, target: str) -> list[EvalRun]:
    """A tag as it is; a build directory: the models `package --create` made of it (general preset, and the video
    model of the same variant for video cases)."""
    def request(tag: str) -> BackendRequest:
        return BackendRequest(BackendKind.OLLAMA, tag, url=options.url, sampling=GREEDY)

    path = Path(target)
    if not path.is_dir():
        return [EvalRun(f"{target} ollama", str(BackendKind.OLLAMA), target, target, request(target))]
    build = BuildDir.open(path)
    models = (build.manifest.section(Section.PACKAGE) or {}).get("models", [])
    general = {m.get("variant", ""): m["tag"] for m in models if m.get("preset", "general") == "general"}
    video = {m.get("variant", ""): m["tag"] for m in models if m.get("preset") == "video"}
    if not general:
        raise SmolconvError(f"{target} has no packaged models", "run `smolconv package --create` first, or pass an "
                            "Ollama model tag")
    variants = {v.name: v for v in build.variants()}
    runs = []
    for name in _pick(list(general), options.types, target):
        variant = variants.get(name)
        run = EvalRun(f"{name} ollama", str(BackendKind.OLLAMA), target, name, request(general[name]),
                      _size([variant.text_path, variant.projector_path]) if variant else None)
        if name in video:
            run.video_request = request(video[name])
        runs.append(run)
    return runs


def _reference_source(options: EvalOptions) -> tuple[Path | None, Path | None, list[str]]:
    """The reference's checkpoint and adapter: --checkpoint, else what the first target that records one names;
    a note for each other target made from another checkpoint."""
    notes = []
    recorded = []
    for target in options.targets:
        if Path(target).is_dir():
            manifest = Manifest.load(Path(target))
            checkpoint = manifest.source.checkpoint
            if checkpoint is not None:
                adapter = manifest.adapter
                recorded.append((target, checkpoint, Path(adapter.path) if adapter and adapter.path else None))
    if options.checkpoint is not None:
        checkpoint, adapter = Path(options.checkpoint), None
    elif recorded:
        _, checkpoint, adapter = recorded[0]
    else:
        return None, None, notes
    for target, other, _ in recorded:
        if other.resolve() != checkpoint.resolve():
            notes.append(f"{target} was made from {other}, not the reference's checkpoint {checkpoint}")
    return checkpoint, adapter, notes


# --------------------------------------------------------------------------------------------------
# The stage


def eval_cases(options: EvalOptions, toolchain=None, progress: ProgressFn = no_progress,
               build: BuildDir | None = None, key: str | None = None) -> EvalReport:
    """Run every case on the reference and each run of the targets; write eval/NAME.json and NAME.png; record the
    summary in the build's build.json. `key`: what the result depends on (build's check key), recorded with it."""
    started = time.monotonic()
    cases = load_cases(options)
    check_request(options, cases)
    runs = plan_runs(options, toolchain, cases)
    checkpoint, adapter, notes = _reference_source(options)
    if options.reference:
        if checkpoint is None or not (checkpoint / "config.json").is_file():
            raise SmolconvError(f"the reference checkpoint is not at {checkpoint}" if checkpoint else
                                "no target records the checkpoint it was made from",
                                "pass --checkpoint DIR (the Hugging Face checkpoint), or --no-reference")
        if adapter is not None and not (adapter / "adapter_config.json").is_file():
            raise SmolconvError(f"the adapter of the reference is not at {adapter}",
                                "pass --checkpoint DIR of a merged checkpoint, or --no-reference")
    home = _home(options, build)
    report_dir = options.report_dir or ((home.path / "eval") if home is not None else Path("eval"))
    report = EvalReport(cases, [], options.gates, {**options.settings_key(), "cases": cases.source},
                        reference={"checkpoint": str(checkpoint), "adapter": str(adapter) if adapter else None}
                        if options.reference else None, notes=notes,
                        started=datetime.now(UTC).isoformat(timespec="seconds"))
    frames: dict = {}
    if options.reference:
        progress("loading the transformers reference (float32)" + (" with the adapter" if adapter else ""), None)
        t0 = time.monotonic()
        size = _size([*checkpoint.glob("*.safetensors"), *(adapter.glob("*.safetensors") if adapter else ())])
        result = RunResult(REFERENCE, REFERENCE, str(checkpoint), "float32", size)
        backend = TransformersBackend(checkpoint, adapter, n_ctx=options.num_ctx, sampling=GREEDY)
        result.info = backend.info()
        _ask_all(backend, cases.cases, result, options, backend.model.tile_size, frames, progress)
        result.seconds = time.monotonic() - t0
        report.runs.append(result)
        tokenizer = backend.model.tokenizer
        del backend
    for run in runs:
        progress(f"starting {run.label}", None)
        t0 = time.monotonic()
        result = RunResult(run.label, run.runtime, run.target, run.variant, run.size_bytes)
        plain_cases = tuple(c for c in cases.cases if c.video is None or run.video_request is None)
        video_cases = tuple(c for c in cases.cases if c.video is not None and run.video_request is not None)
        with open_backend(run.request) as backend:
            result.info = backend.info()
            model = getattr(backend, "model", None)
            _ask_all(backend, plain_cases, result, options, getattr(model, "tile_size", run.frame_size), frames,
                     progress)
        if video_cases:
            progress(f"starting {run.label} for the video cases", None)
            with open_backend(run.video_request) as backend:
                result.info["video"] = backend.info()
                _ask_all(backend, video_cases, result, options, run.frame_size, frames, progress)
        result.answers = {c.id: result.answers[c.id] for c in cases.cases}  # in the file's order
        result.seconds = time.monotonic() - t0
        report.runs.append(result)
    if options.reference:
        _compare(report, tokenizer)
    report.seconds = time.monotonic() - started
    report_dir.mkdir(parents=True, exist_ok=True)
    progress("drawing accuracy and agreement against size", None)
    report.plot = write_plot(report, report_dir / f"{cases.name}.png")
    report.path = report_dir / f"{cases.name}.json"
    write_text_atomic(report.path, json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    if home is not None and (options.report_dir is None or _inside(report_dir, home.path)):
        _record(home, report, key)
    return report


def _home(options: EvalOptions, build: BuildDir | None) -> BuildDir | None:
    """The build whose eval/ keeps the report and whose build.json records it: the first target smolconv wrote."""
    if build is not None:
        return build
    for target in options.targets:
        if Path(target).is_dir() and Manifest.load(Path(target)).has_steps():
            return BuildDir.open(target)
    return None


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _ask_all(backend, cases: tuple[EvalCase, ...], result: RunResult, options: EvalOptions, frame_size: int,
             frames: dict, progress: ProgressFn) -> None:
    for n, case in enumerate(cases):
        progress(f"{result.label}: {case.id}", n / max(1, len(cases)))
        limit = case.max_tokens or options.max_tokens
        try:
            if case.video is not None:  # sampled once per frame size: every run of that size sends the same frames
                known = (case.id, frame_size)
                if known not in frames:
                    frames[known] = case.messages(frame_size, options.fps, options.max_frames)
                messages = frames[known]
            else:
                messages = case.messages()
            answer = backend.chat(messages, limit)
        except BackendError as exc:
            result.answers[case.id] = CaseAnswer(None, error=str(exc))
            continue
        except SmolconvError as exc:  # a video that fails to decode, a prompt over the context
            result.answers[case.id] = CaseAnswer(None, error=exc.one_line())
            continue
        result.answers[case.id] = CaseAnswer(
            answer.text, finish_reason=answer.finish_reason, prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens, wall_s=round(answer.wall_s, 3),
            correct=None if case.expect is None else case.expect.judge(answer.text))
    for case in cases:  # a failed answer is a wrong one
        answer = result.answers[case.id]
        if answer.text is None and case.expect is not None:
            answer.correct = False


def first_token(tokenizer, text: str | None) -> int | None:
    """The first token of an answer as the checkpoint's tokenizer reads it (whitespace-normalised); -1 for an empty
    answer (the model ended its turn at once); None for no answer."""
    if text is None:
        return None
    ids = tokenizer.encode(normalise(text), add_special_tokens=False).ids
    return ids[0] if ids else -1


def _compare(report: EvalReport, tokenizer) -> None:
    reference = report.reference_run
    for run in report.variants:
        for case_id, answer in run.answers.items():
            expected = reference.answers.get(case_id)
            if expected is None or expected.text is None:
                continue
            if answer.text is None:
                answer.agrees = answer.first_token_agrees = False
                continue
            answer.agrees = normalise(answer.text) == normalise(expected.text)
            answer.first_token_agrees = first_token(tokenizer, answer.text) == first_token(tokenizer, expected.text)


def _record(build: BuildDir, report: EvalReport, key: str | None) -> None:
    manifest = build.manifest
    if not manifest.has_steps():
        return
    record = manifest.section(Section.EVAL) or {}
    record[report.cases.name] = report.summary() | ({"key": key} if key else {})
    manifest.set_section(Section.EVAL, record)
    build.save()


def percent(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


def needs_llama_server(targets: tuple[str, ...], backend: BackendKind | None) -> bool:
    """Whether a target runs on llama-server (so the CLI finds the toolchain first); a bad target says nothing here:
    the stage refuses it with its own line."""
    for target in targets:
        try:
            if target_kind(target, backend) is BackendKind.LLAMA_SERVER:
                return True
        except SmolconvError:
            continue
    return False
