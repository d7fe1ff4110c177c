"""`smolconv build`: pull → convert → quantize → plan → package → verify → smoke (→ eval with --cases).

Each step is skipped when build.json says it is done: the file steps by their input and parameter hashes,
verify and smoke when the files they checked, their settings and the llama.cpp commit are unchanged and
they passed. A check that fails does not remove anything: the files are complete, the record says what
failed, and `BuildResult.passed` is False (the CLI exits 1).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from smolconv import __version__
from smolconv.checks.eval import EvalGates, EvalOptions, EvalReport, eval_cases, load_cases
from smolconv.checks.eval import check_request as check_eval_request
from smolconv.checks.smoke import SmokeOptions, SmokeReport, smoke
from smolconv.core.choices import BuildBackend, Via
from smolconv.core.errors import SmolconvError
from smolconv.core.fsutil import remove_stale_partials
from smolconv.core.progress import ProgressFn, no_progress
from smolconv.formats.gguf.convert import ConvertOptions, ConvertResult, convert, convert_adapter
from smolconv.formats.gguf.package import PackageOptions, PackageResult, package
from smolconv.formats.gguf.quantize import DEFAULT_TYPES, QuantizeOptions, QuantizeResult, check_request, quantize
from smolconv.formats.gguf.verify import VerifyOptions, VerifyReport, verify
from smolconv.formats.gguf.video_projector import VideoProjectorResult, write_video_projector
from smolconv.hub.publish import PublishOptions, PublishResult, publish
from smolconv.hub.repo import check_publish_request
from smolconv.llamacpp.toolchain import Toolchain
from smolconv.plan import PlanSettings
from smolconv.record.builddir import BuildDir
from smolconv.record.lock import hold_folder
from smolconv.record.manifest import Manifest
from smolconv.record.views import Section
from smolconv.reference.gates import Gates
from smolconv.source.adapter import AdapterSetup, pull_model_and_adapter
from smolconv.source.checkpoint import inspect_checkpoint
from smolconv.source.merge import MergeOptions, merge
from smolconv.source.pull import Source
from smolconv.source.spec import SourceSpec


@dataclass
class BuildOptions:
    model: str
    out_dir: Path | None = None  # default: out/<model name>
    revision: str | None = None
    outtype: str = "f16"
    types: tuple[str, ...] = DEFAULT_TYPES
    imatrix: Path | None = None
    imatrix_text: Path | None = None
    mmproj_type: str | None = None
    threads: int | None = None
    force: bool = False
    local_files_only: bool = False
    # a PEFT adapter (LoRA/DoRA): a directory or Hub id, merged into the checkpoint or converted beside it
    adapter: str | None = None
    adapter_revision: str | None = None
    adapter_format: str = "merge"
    # plan + package
    settings: PlanSettings = field(default_factory=PlanSettings)
    presets: tuple[str, ...] = ()
    name: str | None = None
    create: bool = False
    via: str = "auto"
    # verify + smoke
    verify: bool = True
    verify_skip: frozenset[str] = frozenset()  # VerifyPart values verify leaves out
    gates: Gates = field(default_factory=Gates)
    smoke: bool = True
    backend: str = "llama-server"   # ollama: smoke the models `--create` made
    publish: str | None = None      # USER/NAME: `smolconv publish` last, only when every check ran and passed
    # eval: the user's cases on every variant and the transformers reference, after smoke, with these gates
    cases: Path | None = None
    eval_gates: EvalGates = field(default_factory=EvalGates)
    wait: bool = False                # another smolconv writing the folder: wait for it (else refuse)

    @property
    def source(self) -> SourceSpec:
        return SourceSpec(self.model, self.revision, self.adapter, self.adapter_revision, self.adapter_format,
                          local_files_only=self.local_files_only)


@dataclass
class BuildResult:
    source: Source
    out_dir: Path
    converted: ConvertResult
    adapter: AdapterSetup | None = None
    quantized: QuantizeResult = field(default_factory=QuantizeResult)
    packaged: PackageResult | None = None
    video_projector: VideoProjectorResult | None = None
    verified: VerifyReport | None = None
    verify_reused: bool = False
    smoked: list[SmokeReport] = field(default_factory=list)
    smoke_reused: list[str] = field(default_factory=list)  # variants whose passing smoke record was kept
    evaluated: EvalReport | None = None
    eval_reused: str | None = None  # the cases' name, when a passing eval of these files and cases was kept
    published: PublishResult | None = None
    failures: list[str] = field(default_factory=list)
    # When each stage of this run started (Unix time) and how long it took: build.json's "last_build".
    stages: list[dict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def convert_source(source: Source, out_dir: Path, outtype: str, toolchain: Toolchain, progress: ProgressFn,
                   *, force: bool = False, adapter: AdapterSetup | None = None,
                   build: BuildDir | None = None, wait: bool = False) -> ConvertResult:
    """Convert the checkpoint, or with an adapter: merge then convert, or convert the base and the adapter."""
    with hold_folder(out_dir, wait=wait, on_wait=lambda text: progress(text, None)):

        build = build or BuildDir.open(out_dir)
        checkpoint, name = source.path, source.name
        if adapter is not None and adapter.format == "merge":
            base = inspect_checkpoint(source.path)
            merged = merge(MergeOptions(base, adapter.info, out_dir, force=force), progress, build)
            adapter.merged, adapter.skipped, adapter.seconds = merged.path, merged.skipped, merged.seconds
            # The merged model is the fine-tune: its files carry the adapter's name.
            checkpoint, name = merged.path, adapter.info.name
        converted = convert(ConvertOptions(checkpoint=checkpoint, out_dir=out_dir, outtype=outtype, name=name,
                                           force=force), toolchain, progress, source=source, build=build)
        if adapter is not None and adapter.format == "gguf":
            lora = convert_adapter(adapter.info, inspect_checkpoint(source.path), out_dir, toolchain, progress,
                                   force=force, build=build)
            adapter.gguf, adapter.skipped, adapter.seconds = lora.model, lora.skipped, lora.seconds
        manifest = build.manifest
        manifest.set_adapter(adapter.to_record(manifest) if adapter is not None else None)
        manifest.save()
        return converted


def check_build_request(options: BuildOptions) -> None:
    """Refuse a combination that would fail only after the long steps."""
    if options.smoke and options.backend not in tuple(BuildBackend):
        raise SmolconvError(f"unknown backend {options.backend!r}", f"use one of {', '.join(BuildBackend)}")
    if options.via not in tuple(Via):  # only package reads it, after the long steps
        raise SmolconvError(f"unknown --via {options.via!r}", f"use one of {', '.join(Via)}")
    if options.smoke and options.backend == "ollama" and not options.create:
        raise SmolconvError("smoke on Ollama needs the models created first",
                            "add --create, or use --backend llama-server")
    if options.publish:
        if not (options.verify and options.smoke):
            raise SmolconvError("--publish uploads a build only after verify and smoke pass",
                                "drop --no-verify/--no-smoke, or run `smolconv publish` after the build")
        check_publish_request(options.publish)  # no token or offline: say so now, not after the long steps
    if options.cases is not None:  # a bad case is one line now, not after the long steps
        eval_options = _eval_options(options, Path("."), ())
        check_eval_request(eval_options, load_cases(eval_options))


def build(options: BuildOptions, toolchain: Toolchain, progress: ProgressFn = no_progress) -> BuildResult:
    # The quantize request is checked now (a typo in --type fails before a long conversion); its folder is set
    # once the pull has named the model.
    quantize_request = QuantizeOptions(out_dir=None, types=options.types, imatrix=options.imatrix,
                                       imatrix_text=options.imatrix_text, mmproj_type=options.mmproj_type,
                                       threads=options.threads, force=options.force)
    check_request(quantize_request, toolchain)
    check_build_request(options)
    stages: list[dict] = []
    adapter = None
    with _timed(stages, "pull"):
        source, adapter = pull_model_and_adapter(options.source, force=options.force, progress=progress)
    default_name = adapter.info.name if adapter else source.name
    out_dir = Path(options.out_dir) if options.out_dir else Path("out") / default_name
    with hold_folder(out_dir, wait=options.wait, on_wait=lambda text: progress(text, None)):
        remove_stale_partials(out_dir)  # what a killed earlier build was writing: this build writes it again
        build_dir = BuildDir.open(out_dir)  # read once; every stage below reads and writes through it
        with _timed(stages, "convert"):
            converted = convert_source(source, out_dir, options.outtype, toolchain, progress, force=options.force,
                                       adapter=adapter, build=build_dir)
        with _timed(stages, "quantize"):
            quantized = quantize(replace(quantize_request, out_dir=out_dir), toolchain, progress, build_dir)
            progress("the video projector", None)
            video_projector = write_video_projector(build_dir, force=options.force)
        # Package the variants this build asked for (the F16 conversion is an intermediate, not a product).
        built = tuple(r.qtype for r in quantized.reports)
        with _timed(stages, "plan + package"):
            packaged = package(PackageOptions(out_dir, types=built, presets=options.presets, name=options.name,
                                              settings=options.settings, force=options.force, create=options.create,
                                              via=options.via), progress, build_dir)
        result = BuildResult(source=source, out_dir=out_dir, converted=converted, adapter=adapter,
                             quantized=quantized, packaged=packaged, stages=stages, video_projector=video_projector)
        if options.verify:
            with _timed(stages, "verify"):
                run_verify(options, build_dir, built, toolchain, progress, result)
        if options.smoke:
            with _timed(stages, "smoke"):
                run_smoke(options, build_dir, built, toolchain, progress, result)
        if options.cases is not None:
            with _timed(stages, "eval"):
                run_eval(options, build_dir, built, toolchain, progress, result)
        build_dir.manifest.set_section(Section.LAST_BUILD, {"stages": stages, "passed": result.passed})
        build_dir.save()
        if options.publish and result.passed:
            with _timed(stages, "publish"):
                result.published = publish(
                    PublishOptions(out_dir, options.publish, types=built, settings=options.settings), progress,
                    build_dir)
        return result


@contextlib.contextmanager
def _timed(stages: list[dict], name: str):
    started, clock = time.time(), time.monotonic()
    try:
        yield
    finally:
        stages.append({"stage": name, "started": round(started, 3), "seconds": round(time.monotonic() - clock, 3)})


def _check_key(manifest: Manifest, files: list[str], params: dict) -> str:
    """What a check depends on: the files it ran (by sha256), its settings, smolconv and llama.cpp."""

    blob = {"files": {name: manifest.recorded_sha256(name) for name in files},
            "params": params, "smolconv": __version__,
            "llama_cpp": (manifest.llama_cpp or {}).get("commit")}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def _variant_files(build: BuildDir, names: tuple[str, ...]) -> list[str]:
    files = set()
    for variant in build.variants(names):
        files |= {variant.text_path.name, variant.projector_path.name}
        for extra in (variant.adapter_path, variant.video_projector_path):  # verify and smoke run them too
            if extra is not None:
                files.add(extra.name)
    return sorted(files)


def verify_key(options: BuildOptions, build: BuildDir, built: tuple[str, ...]) -> str:
    """What build's verify depends on; a record made with other checks left out is not this one."""
    manifest = build.manifest
    adapter = manifest.adapter
    params = {"gates": options.gates, "types": built, "source": manifest.source.files,
              "adapter": adapter.files if adapter is not None else None}
    if options.verify_skip:  # only then, so that the records of full verifies made before stay valid
        params["skip"] = sorted(options.verify_skip)
    return _check_key(manifest, _variant_files(build, ("F16", *built)), params)


def run_verify(options: BuildOptions, build: BuildDir, built: tuple[str, ...], toolchain: Toolchain,
               progress: ProgressFn, result: BuildResult) -> None:
    manifest = build.manifest
    key = verify_key(options, build, built)
    record = manifest.section(Section.VERIFY) or {}
    if not options.force and record.get("key") == key and record.get("passed"):
        result.verify_reused = True
        return
    report = verify(VerifyOptions(build.path, types=built, gates=options.gates, skip=options.verify_skip,
                                  threads=options.threads),
                    toolchain, progress, build, key)
    result.verified = report
    result.failures += [f"verify: {failure}" for failure in report.failures]


def run_smoke(options: BuildOptions, build: BuildDir, built: tuple[str, ...], toolchain: Toolchain,
              progress: ProgressFn, result: BuildResult) -> None:
    manifest = build.manifest
    records = manifest.section(Section.SMOKE) or {}
    keys, todo = {}, []
    for name in built:
        keys[name] = _check_key(manifest, _variant_files(build, (name,)),
                                {"backend": options.backend, "settings": options.settings, "strict": True})
        record = records.get(f"{name}:{options.backend}", {})
        if not options.force and record.get("key") == keys[name] and record.get("passed"):
            result.smoke_reused.append(name)
        else:
            todo.append(name)
    if not todo:
        return
    # Strict: a wrong answer fails the build (and so blocks --publish). What cannot be judged (answers from a
    # fixture's random parts) is noted in the report, not failed.
    reports = smoke(SmokeOptions(str(build.path), backend=options.backend, types=tuple(todo),
                                 settings=options.settings, threads=options.threads, strict=True),
                    toolchain, progress, build, keys)
    result.smoked = reports
    result.failures += [f"smoke {r.variant}: {', '.join(c.name for c in r.results if not c.passed)} failed"
                        for r in reports if not r.passed]


def _eval_options(options: BuildOptions, out_dir: Path, built: tuple[str, ...]) -> EvalOptions:
    return EvalOptions((str(out_dir),), cases=options.cases, types=built, gates=options.eval_gates,
                       settings=options.settings, threads=options.threads)


def run_eval(options: BuildOptions, build: BuildDir, built: tuple[str, ...], toolchain: Toolchain,
             progress: ProgressFn, result: BuildResult) -> None:
    """eval of the built variants and the reference; kept when a passing one ran on these files, cases and settings."""
    manifest = build.manifest
    eval_options = _eval_options(options, build.path, built)
    cases = load_cases(eval_options)
    adapter = manifest.adapter
    key = _check_key(manifest, _variant_files(build, built),
                     {"eval": eval_options.settings_key(), "cases_sha256": cases.sha256,
                      "source": manifest.source.files, "adapter": adapter.files if adapter is not None else None})
    record = (manifest.section(Section.EVAL) or {}).get(cases.name) or {}
    if not options.force and record.get("key") == key and record.get("passed"):
        result.eval_reused = cases.name
        return
    report = eval_cases(eval_options, toolchain, progress, build, key)
    result.evaluated = report
    result.failures += [f"eval: {failure}" for failure in report.failures]
