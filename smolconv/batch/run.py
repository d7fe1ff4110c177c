"""`smolconv batch FILE`: every entry of a recipe, one after another, each into DIR/<name>/<format>/.

For each entry, before anything is downloaded:
1. its inputs: the source's and the adapter's commits (one small Hub call each; a local directory's files hashed,
   with a cache against size and mtime), smolconv's version, the llama.cpp commit and the entry's settings;
2. unchanged since this folder's last successful run (DIR/<name>/entry.json, its files still there): skipped;
3. an entry that publishes compares the same inputs with the build record in its repo (hub/record.py, what
   `publish` uploads): current there, skipped;
4. otherwise each format is built (`build`, `export-onnx`, `export-mlx`, their checks included; every step that is
   current in the folder is reused, as always), then published when every check passed.

A failed entry does not stop the others (`fail_fast` does). The summary goes to DIR/batch.json.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from smolconv import __version__
from smolconv.batch.recipe import Entry, Recipe
from smolconv.core.choices import OutputFormat
from smolconv.core.errors import SmolconvError
from smolconv.core.fsutil import write_text_atomic
from smolconv.core.hashing import sha256_file
from smolconv.core.progress import ProgressFn, no_progress
from smolconv.formats.gguf.quantize import QuantizeOptions, check_request
from smolconv.formats.mlx import require_mlx
from smolconv.formats.mlx.export import ExportMlxOptions
from smolconv.formats.mlx.export import export_and_verify as export_mlx_and_verify
from smolconv.formats.onnx import require_onnx
from smolconv.formats.onnx.export import ExportOptions
from smolconv.formats.onnx.export import export_and_verify as export_onnx_and_verify
from smolconv.hub.publish import PublishOptions, publish
from smolconv.hub.record import Origin, RecordInputs, files_commit, read_published, resolve_commit
from smolconv.hub.repo import check_publish_request
from smolconv.llamacpp.toolchain import LLAMA_CPP_PYTHON_VERSION, SetupOptions, Toolchain, setup_toolchain
from smolconv.pipeline import BuildOptions, build, check_build_request
from smolconv.source.adapter import CONFIG_FILE, WEIGHTS_FILE
from smolconv.source.checkpoint import checkpoint_files

ENTRY_RECORD = "entry.json"
SUMMARY = "batch.json"
ENTRY_RECORD_VERSION = 1
# Records a later `smolconv verify` or `smoke` on an entry's folder rewrites: not what decides that it is complete.
RECORDS = frozenset({"build.json", "verify.json"})


class EntryOutcome(StrEnum):
    BUILT = "built"        # every format built (or reused) and checked, and published when asked
    SKIPPED = "skipped"    # nothing changed: see the reason
    FAILED = "failed"
    NOT_RUN = "not run"    # after a failure, with fail_fast


@dataclass
class BatchOptions:
    recipe: Recipe
    out_dir: Path = Path("out")
    only: tuple[str, ...] = ()
    fail_fast: bool = False
    verify: bool = True
    smoke: bool = True
    publish: bool = True       # False: build what publishes, upload nothing (and compare with no Hub record)
    threads: int | None = None
    force: bool = False        # rebuild every entry, whatever the records say (build's steps are redone too)
    # Build the pinned llama.cpp (these options: CUDA or not) only when an entry is to be built, after its skip checks:
    # a job or CI runner that finds nothing new never builds it. None: the toolchain must be there already.
    setup: SetupOptions | None = None


@dataclass
class EntryResult:
    name: str
    formats: tuple[str, ...]
    outcome: EntryOutcome = EntryOutcome.NOT_RUN
    seconds: float = 0.0
    reason: str = ""                   # why skipped, or why built ("source A → B"), or what failed
    failures: list[str] = field(default_factory=list)
    published: str | None = None       # the repo, when this run uploaded to it (or found it current)
    url: str | None = None             # the commit this run made

    def to_dict(self) -> dict:
        return {"name": self.name, "formats": list(self.formats), "result": str(self.outcome),
                "seconds": round(self.seconds, 1), "reason": self.reason, "failures": self.failures,
                "published": self.published, "url": self.url}


@dataclass
class BatchResult:
    recipe: Path
    out_dir: Path
    entries: list[EntryResult]
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(e.outcome in (EntryOutcome.BUILT, EntryOutcome.SKIPPED) for e in self.entries)

    @property
    def summary_path(self) -> Path:
        return self.out_dir / SUMMARY

    def to_dict(self) -> dict:
        return {"recipe": str(self.recipe), "smolconv": __version__, "passed": self.passed,
                "seconds": round(self.seconds, 1), "entries": [e.to_dict() for e in self.entries]}


class BatchProgress(Protocol):
    """What the CLI shows while a batch runs: each entry's stages, and each entry's end."""

    def entry(self, name: str) -> ProgressFn: ...

    def finished(self, result: EntryResult) -> None: ...


class NoBatchProgress:
    def entry(self, name: str) -> ProgressFn:
        return no_progress

    def finished(self, result: EntryResult) -> None:
        pass


# --------------------------------------------------------------------------------------------------
# Before anything runs


@dataclass
class Plan:
    """The entries to run, checked, and what they share."""

    entries: list[Entry]
    toolchain: Toolchain | None        # None when no entry builds GGUF, or (options.setup) not built yet
    types: dict[str, tuple[str, ...]]  # entry -> its GGUF types, as llama-quantize names them
    token: str | None                  # the Hub token, when an entry publishes (read, never shown)
    setup: SetupOptions | None = None  # how to build the toolchain when an entry needs it

    def gguf_toolchain(self, entry: Entry, progress: ProgressFn) -> Toolchain:
        """The toolchain for this entry's GGUF build: built now when it was deferred, and the entry's types
        checked against it (what check_batch does up front when it is there)."""
        if self.toolchain is None:
            assert self.setup is not None
            progress("building the pinned llama.cpp (once)", None)
            self.toolchain = setup_toolchain(self.setup, progress).toolchain
        if entry.name not in self.types:
            self.types[entry.name] = tuple(check_request(QuantizeOptions(out_dir=None, types=entry.types),
                                                         self.toolchain))
        return self.toolchain


def check_batch(options: BatchOptions, find_toolchain) -> Plan:
    """Everything that can be refused before the first entry starts: one line naming the file and the entry."""
    recipe = options.recipe
    entries = recipe.select(options.only)
    toolchain = None
    types: dict[str, tuple[str, ...]] = {}
    formats = {f for e in entries for f in e.formats}
    if OutputFormat.ONNX in formats:
        require_onnx()
    if OutputFormat.MLX in formats:
        require_mlx()
    if OutputFormat.GGUF in formats:
        try:
            toolchain = find_toolchain()
        except SmolconvError:
            if options.setup is None:
                raise
            # Built when an entry needs it; until then the pin stands in for its commit, and the types are
            # checked once it is there.
    for entry in entries:
        with _naming(recipe, entry):
            if OutputFormat.GGUF in entry.formats and toolchain is not None:
                types[entry.name] = tuple(check_request(QuantizeOptions(out_dir=None, types=entry.types),
                                                        toolchain))
                if entry.cases is not None:  # a case that cannot run: refused now, as `build --cases` does
                    check_build_request(BuildOptions(model=entry.source.argument, cases=entry.cases))
            if entry.publish and options.publish and not (options.verify and options.smoke):
                raise SmolconvError("it publishes, and a build is uploaded only after verify and smoke pass",
                                    "drop --no-verify/--no-smoke, or add --no-publish")
    token = None
    publishing = [e for e in entries if e.publish and options.publish]
    if publishing:
        with _naming(recipe, publishing[0]):
            check_publish_request(publishing[0].publish)  # no token or offline: said now, not after a build
        token = _token()
    return Plan(entries, toolchain, types, token, options.setup)


class _naming:
    """Re-raise a SmolconvError with the recipe file and the entry in front."""

    def __init__(self, recipe: Recipe, entry: Entry):
        self.where = f"{recipe.path}, entry {entry.name!r}"

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if isinstance(exc, SmolconvError) and not str(exc.problem).startswith(self.where):
            raise SmolconvError(f"{self.where}: {exc.problem}", exc.fix) from None
        return False


def _token() -> str | None:
    from huggingface_hub import get_token

    return get_token()


# --------------------------------------------------------------------------------------------------
# The run


def run_batch(options: BatchOptions, find_toolchain, progress: BatchProgress | None = None) -> BatchResult:
    """Run every selected entry; `find_toolchain()` is called only when an entry builds GGUF."""
    progress = progress or NoBatchProgress()
    started = time.monotonic()
    plan = check_batch(options, find_toolchain)
    results = [EntryResult(e.name, tuple(str(f) for f in e.formats)) for e in plan.entries]
    result = BatchResult(options.recipe.path, Path(options.out_dir), results)
    for entry, entry_result in zip(plan.entries, results, strict=True):
        run_entry(entry, entry_result, options, plan, progress.entry(entry.name))
        progress.finished(entry_result)
        if entry_result.outcome is EntryOutcome.FAILED and options.fail_fast:
            break
    result.seconds = time.monotonic() - started
    result.out_dir.mkdir(parents=True, exist_ok=True)  # every entry may have been skipped: nothing made it yet
    write_text_atomic(result.summary_path, json.dumps(result.to_dict(), indent=2) + "\n")
    return result


def run_entry(entry: Entry, result: EntryResult, options: BatchOptions, plan: Plan, progress: ProgressFn) -> None:
    clock = time.monotonic()
    folder = Path(options.out_dir) / entry.name
    try:
        progress("comparing the inputs with the last build", None)
        record = EntryRecord.load(folder)
        inputs = entry_inputs(entry, options, plan, record)
        key = inputs.key()
        if not options.force and key is not None and record.key == key and record.files_present(folder):
            result.outcome, result.reason = EntryOutcome.SKIPPED, "unchanged since its last build here"
            result.published = record.published
            return
        publishing = entry.publish_format if options.publish else None
        if publishing is not None and not options.force:
            progress(f"reading the build record of {entry.publish}", None)
            wanted = inputs.record_inputs(publishing)
            published = read_published(entry.publish, token=plan.token)
            differences = wanted.differences(published.inputs) if published else ["no build record there yet"]
            if not differences:
                result.outcome, result.published = EntryOutcome.SKIPPED, entry.publish
                result.reason = f"{entry.publish} holds this build already (its smolconv.json)"
                return
            result.reason = f"{entry.publish}: {'; '.join(differences)}"
        elif record.key is not None and not options.force:
            result.reason = "inputs changed since its last build here"
        built = build_entry(entry, options, plan, folder, progress, result)
        if result.failures:
            result.outcome = EntryOutcome.FAILED
            return
        if publishing is not None:
            progress(f"publishing to {entry.publish}", None)
            types = built.get(OutputFormat.GGUF, ())
            published = publish(PublishOptions(folder / str(publishing), entry.publish, types=types,
                                               private=entry.private), progress)
            result.published, result.url = entry.publish, published.url
        record.save(folder, key, inputs, entry, result.published)
        result.outcome = EntryOutcome.BUILT
    except SmolconvError as exc:
        result.outcome = EntryOutcome.FAILED
        result.failures.append(exc.one_line())
    finally:
        result.seconds = time.monotonic() - clock


def build_entry(entry: Entry, options: BatchOptions, plan: Plan, folder: Path, progress: ProgressFn,
                result: EntryResult) -> dict[OutputFormat, tuple[str, ...]]:
    """Each format of the entry into its folder; check failures go to result.failures (the formats after a failed
    check still run: their checks are worth knowing). Returns the GGUF variants built."""
    built: dict[OutputFormat, tuple[str, ...]] = {}
    adapter = entry.adapter.argument if entry.adapter else None
    for fmt in entry.formats:
        out = folder / str(fmt)
        if fmt is OutputFormat.GGUF:
            toolchain = plan.gguf_toolchain(entry, progress)
            gguf = build(BuildOptions(model=entry.source.argument, out_dir=out, revision=entry.revision,
                                      types=plan.types[entry.name], presets=entry.presets, threads=options.threads,
                                      force=options.force, adapter=adapter, adapter_revision=entry.adapter_revision,
                                      adapter_format=str(entry.adapter_format), verify=options.verify,
                                      smoke=options.smoke, cases=entry.cases), toolchain, progress)
            built[fmt] = tuple(r.qtype for r in gguf.quantized.reports)
            result.failures += [f"gguf {failure}" for failure in gguf.failures]
        elif fmt is OutputFormat.ONNX:
            _, report = export_onnx_and_verify(
                ExportOptions(entry.source.argument, out, force=options.force, revision=entry.revision,
                              adapter=adapter, adapter_revision=entry.adapter_revision),
                verify=options.verify, threads=options.threads, progress=progress)
            if report is not None and not report.passed:
                result.failures += [f"onnx verify: {failure}" for failure in report.failures]
        else:
            _, report = export_mlx_and_verify(
                ExportMlxOptions(entry.source.argument, out, force=options.force, revision=entry.revision,
                                 adapter=adapter, adapter_revision=entry.adapter_revision),
                verify=options.verify, progress=progress)
            if report is not None and not report.passed:
                result.failures += [f"mlx verify: {failure}" for failure in report.failures]
    return built


def pending(options: BatchOptions, find_toolchain) -> list[Entry]:
    """The selected entries a run would build now, for a CI matrix that starts no job for the others: every entry
    that publishes nothing (there is no record to compare with), and each one whose repo's build record differs
    from its inputs (or cannot be read). Reads the Hub; needs no llama.cpp (its pin stands in) and builds nothing."""
    entries = options.recipe.select(options.only)
    try:
        toolchain = find_toolchain() if any(OutputFormat.GGUF in e.formats for e in entries) else None
    except SmolconvError:
        toolchain = None
    plan = Plan(entries, toolchain, {}, _token())
    todo = []
    for entry in entries:
        fmt = entry.publish_format
        if fmt is not None:
            try:
                inputs = entry_inputs(entry, options, plan, EntryRecord())
                published = read_published(entry.publish, token=plan.token)
                if published is not None and not inputs.record_inputs(fmt).differences(published.inputs):
                    continue
            except SmolconvError:
                pass  # the build job will say what is wrong, in its own log
        todo.append(entry)
    return todo


# --------------------------------------------------------------------------------------------------
# What an entry is made from, known before anything is downloaded


@dataclass
class EntryInputs:
    entry: Entry
    types: tuple[str, ...]
    source: Origin
    adapter: Origin | None
    llama_cpp: str | None        # the toolchain's commit (None: not built yet, or a user build without one)
    llama_cpp_python: str | None  # the pinned toolchain's sdist version (None: a llama.cpp of the user's own)
    llama_cpp_key: str | None    # what stands for llama.cpp in the entry's key: the pin, or a user build's version
    checks: dict
    cases: str | None            # the sha256 of the entry's cases file

    def record_inputs(self, fmt: OutputFormat) -> RecordInputs:
        """What the build record of the repo `fmt` is published to must say for this entry to be current."""
        gguf = fmt is OutputFormat.GGUF
        return RecordInputs(format=str(fmt), source=self.source, adapter=self.adapter, smolconv=__version__,
                            llama_cpp=self.llama_cpp if gguf else None,
                            llama_cpp_python=self.llama_cpp_python if gguf else None,
                            types=tuple(sorted(self.types)) if gguf else ())

    def key(self) -> str | None:
        """The entry's key for DIR/<name>/entry.json; None while a commit is unknown (then it always runs)."""
        if self.source.commit is None or (self.adapter is not None and self.adapter.commit is None):
            return None
        e = self.entry
        blob = {"source": self.source.to_dict(), "adapter": self.adapter.to_dict() if self.adapter else None,
                "smolconv": __version__, "checks": self.checks, "cases": self.cases,
                "llama_cpp": self.llama_cpp_key,
                "entry": {"formats": [str(f) for f in e.formats], "types": list(self.types),
                          "presets": list(e.presets), "adapter_format": str(e.adapter_format),
                          "publish": e.publish, "private": e.private}}
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def _product(folder: Path, path: Path) -> bool:
    """A file the entry made: not a record the checks rewrite (build.json, verify.json, smoke/), nothing hidden."""
    parts = path.relative_to(folder).parts
    return path.is_file() and path.name not in RECORDS and "smoke" not in parts[:-1] and not any(
        part.startswith(".") for part in parts)


def entry_inputs(entry: Entry, options: BatchOptions, plan: Plan, record: EntryRecord) -> EntryInputs:
    from huggingface_hub import constants

    def origin(place, revision: str | None, files) -> Origin:
        if place.path is not None:
            return Origin(None, files_commit({p.name: record.sha256(p) for p in files(place.path)}))
        if revision is not None and len(revision) == 40 and all(c in "0123456789abcdef" for c in revision):
            return Origin(place.repo_id, revision)
        if constants.HF_HUB_OFFLINE:  # the commit of a branch is not known offline: the entry runs
            return Origin(place.repo_id, None)
        return Origin(place.repo_id, resolve_commit(place.repo_id, revision, token=plan.token or _token()))

    source = origin(entry.source, entry.revision, checkpoint_files)
    adapter = None
    if entry.adapter is not None:
        adapter = origin(entry.adapter, entry.adapter_revision,
                         lambda path: [p for p in (path / CONFIG_FILE, path / WEIGHTS_FILE) if p.is_file()])
    toolchain = plan.toolchain
    llama_cpp = toolchain.info.get("llama_cpp_commit") if toolchain is not None else None
    if toolchain is None:  # not built yet: what setup will build
        pin = LLAMA_CPP_PYTHON_VERSION if OutputFormat.GGUF in entry.formats else None
    else:
        pin = toolchain.info.get("llama_cpp_python") if toolchain.origin == "pinned" else None
    # The pinned llama.cpp by its pin (the same before and after it is built), a user's build by its version line.
    key = (f"llama-cpp-python {pin}" if pin else toolchain.identity() if toolchain is not None else None)
    # Before the toolchain can name them, the types as llama-quantize spells them (its names are upper case).
    types = plan.types.get(entry.name) or tuple(t.upper() for t in entry.types if OutputFormat.GGUF in entry.formats)
    return EntryInputs(entry, types, source, adapter, llama_cpp, pin, key,
                       {"verify": options.verify, "smoke": options.smoke,
                        "publish": bool(entry.publish and options.publish)},
                       record.sha256(entry.cases) if entry.cases else None)


@dataclass
class EntryRecord:
    """DIR/<name>/entry.json: the key of the entry's last successful run, the files it left, where it published,
    and a sha256 cache of the local files its inputs were hashed from (against size and mtime)."""

    key: str | None = None
    files: dict[str, int] = field(default_factory=dict)  # path inside DIR/<name>/ -> size
    published: str | None = None
    hashes: dict[str, list] = field(default_factory=dict)  # absolute path -> [size, mtime_ns, sha256]

    @classmethod
    def load(cls, folder: Path) -> EntryRecord:
        try:
            data = json.loads((folder / ENTRY_RECORD).read_text())
        except (OSError, ValueError):
            return cls()
        if not isinstance(data, dict) or data.get("record") != ENTRY_RECORD_VERSION:
            return cls()
        return cls(data.get("key"), dict(data.get("files") or {}), data.get("published"),
                   dict(data.get("hashes") or {}))

    def sha256(self, path: Path) -> str:
        stat = path.stat()
        cached = self.hashes.get(str(path))
        if cached and cached[:2] == [stat.st_size, stat.st_mtime_ns]:
            return cached[2]
        digest = sha256_file(path)
        self.hashes[str(path)] = [stat.st_size, stat.st_mtime_ns, digest]
        return digest

    def files_present(self, folder: Path) -> bool:
        if not self.files:
            return False
        for name, size in self.files.items():
            path = folder / name
            if not path.is_file() or path.stat().st_size != size:
                return False
        return True

    def save(self, folder: Path, key: str | None, inputs: EntryInputs, entry: Entry, published: str | None) -> None:
        self.key, self.published = key, published
        self.files = {p.relative_to(folder).as_posix(): p.stat().st_size
                      for fmt in entry.formats for p in sorted((folder / str(fmt)).rglob("*")) if _product(folder, p)}
        data = {"record": ENTRY_RECORD_VERSION, "key": key, "smolconv": __version__,
                "inputs": {"source": inputs.source.to_dict(),
                           "adapter": inputs.adapter.to_dict() if inputs.adapter else None,
                           "llama_cpp": inputs.llama_cpp, "types": list(inputs.types), "checks": inputs.checks},
                "published": published, "files": self.files, "hashes": self.hashes}
        write_text_atomic(folder / ENTRY_RECORD, json.dumps(data, indent=2) + "\n")
