"""`smolconv build`: pull → convert → quantize → plan → package, each step skipped when build.json says it is done."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from smolconv.convert import ConvertOptions, ConvertResult, convert
from smolconv.package import PackageOptions, PackageResult, package
from smolconv.plan import PlanSettings
from smolconv.progress import ProgressFn, no_progress
from smolconv.pull import PullOptions, Source, pull
from smolconv.quantize import DEFAULT_TYPES, QuantizeOptions, QuantizeResult, check_request, quantize
from smolconv.toolchain import Toolchain


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
    # plan + package
    settings: PlanSettings = field(default_factory=PlanSettings)
    presets: tuple[str, ...] = ()
    name: str | None = None
    create: bool = False
    via: str = "auto"


@dataclass
class BuildResult:
    source: Source
    out_dir: Path
    converted: ConvertResult
    quantized: QuantizeResult = field(default_factory=QuantizeResult)
    packaged: PackageResult | None = None


def build(options: BuildOptions, toolchain: Toolchain, progress: ProgressFn = no_progress) -> BuildResult:
    quantize_options = QuantizeOptions(out_dir=Path("."), types=options.types, imatrix=options.imatrix,
                                       imatrix_text=options.imatrix_text, mmproj_type=options.mmproj_type,
                                       threads=options.threads, force=options.force)
    check_request(quantize_options, toolchain)  # a typo in --type fails now, not after a long conversion
    progress(f"pulling {options.model}", None)
    source = pull(PullOptions(options.model, revision=options.revision, local_files_only=options.local_files_only))
    out_dir = Path(options.out_dir) if options.out_dir else Path("out") / source.name
    converted = convert(
        ConvertOptions(checkpoint=source.path, out_dir=out_dir, outtype=options.outtype, name=source.name,
                       force=options.force),
        toolchain, progress, source=source,
    )
    quantize_options.out_dir = out_dir
    quantized = quantize(quantize_options, toolchain, progress)
    # Package the variants this build asked for (the F16 conversion is an intermediate, not a product).
    built = tuple(r.qtype for r in quantized.reports)
    packaged = package(PackageOptions(out_dir, types=built, presets=options.presets, name=options.name,
                                      settings=options.settings, force=options.force, create=options.create,
                                      via=options.via), progress)
    return BuildResult(source=source, out_dir=out_dir, converted=converted, quantized=quantized, packaged=packaged)
