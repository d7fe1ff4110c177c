"""`smolconv quantize`: llama-quantize per type, and a report of what each file really holds.

llama.cpp's K-quants store rows in blocks of 256 values. SmolVLM2-256M (hidden size 576) and -500M (960)
have rows that are not multiples of 256, so llama-quantize falls back to 32-value formats for those
tensors (Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0). The report reads the tensor types back from the GGUF, so
the user sees that most of their "Q4_K_M" is Q5_0 rather than trusting the file name.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from gguf import GGML_QUANT_SIZES, GGML_QUANT_VERSION, GGMLQuantizationType, LlamaFileType

from smolconv.core.errors import SmolconvError
from smolconv.core.hashing import WrittenFileHash
from smolconv.core.progress import ProgressFn, no_progress
from smolconv.llamacpp.gguf_header import read_gguf_header, requantized_header
from smolconv.llamacpp.toolchain import Toolchain
from smolconv.process.runner import run_tool
from smolconv.record.builddir import BuildDir
from smolconv.record.lock import hold_folder
from smolconv.record.manifest import Manifest

DEFAULT_TYPES = ("Q4_K_M", "Q5_K_M", "Q8_0")
# llama-quantize refuses these without an importance matrix (and IQ3_XXS is poor without one).
NEEDS_IMATRIX = {"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "Q2_K_S"}
FLOAT_TYPES = {"F32", "F16", "BF16"}
IMATRIX_NAME = "imatrix.gguf"
# llama-imatrix needs at least two chunks of this many tokens; 256 keeps short calibration texts usable.
IMATRIX_CONTEXT = 256


@dataclass
class QuantizeOptions:
    out_dir: Path | None              # None: a request checked before its build directory is known (build)
    types: tuple[str, ...] = DEFAULT_TYPES
    imatrix: Path | None = None       # an importance matrix made elsewhere
    imatrix_text: Path | None = None  # or a text to compute one from with llama-imatrix
    mmproj_type: str | None = None    # e.g. Q8_0; None keeps the converted (f16) projector
    threads: int | None = None
    force: bool = False
    wait: bool = False                # another smolconv writing the folder: wait for it (else refuse)


@dataclass
class QuantReport:
    qtype: str
    path: Path
    size: int
    bits_per_weight: float
    n_tensors: int
    tensor_types: dict[str, int]          # ggml type -> tensors of that type
    weight_share: dict[str, float]        # ggml type -> share of all weights (by element count)
    fallbacks: dict[str, int]             # type a tensor fell back to -> count
    log_fallbacks: int | None = None      # what llama-quantize's own summary said
    seconds: float = 0.0
    skipped: bool = False
    requested_main: str | None = None     # the tensor type the name promises (Q4_K for Q4_K_M)

    @property
    def n_fallbacks(self) -> int:
        return sum(self.fallbacks.values())

    def dominant_type(self) -> str:
        quantized = {t: s for t, s in self.weight_share.items() if t not in FLOAT_TYPES}
        return max(quantized, key=quantized.get) if quantized else max(self.weight_share, key=self.weight_share.get)

    def plain_summary(self) -> str:
        """One sentence a user can act on."""
        dominant = self.dominant_type()
        share = self.weight_share.get(dominant, 0.0)
        text = f"{self.qtype}: {self.size / 2**20:.1f} MiB, {self.bits_per_weight:.2f} bits per weight"
        if self.n_fallbacks:
            moved = ", ".join(f"{n} to {t}" for t, n in sorted(self.fallbacks.items(), key=lambda kv: -kv[1]))
            text += (f"; {self.n_fallbacks} of {self.n_tensors} tensors fell back from {self.requested_main} "
                     f"({moved}) because their rows are not multiples of {_block_size(self.requested_main)}")
            if self.log_fallbacks is not None and self.log_fallbacks != self.n_fallbacks:
                text += f" (llama-quantize's own count: {self.log_fallbacks})"
        if self.requested_main and dominant != self.requested_main:
            text += f". Most of this \"{self.qtype}\" is {dominant} ({share:.0%} of the weights)"
        return text + "."

    @classmethod
    def from_dict(cls, data: dict, path: Path) -> QuantReport:
        return cls(
            qtype=data["type"], path=path, size=data["size"], bits_per_weight=data["bits_per_weight"],
            n_tensors=data["tensors"], tensor_types=data["tensor_types"], weight_share=data["weight_share"],
            fallbacks=data["fallbacks"], log_fallbacks=data["llama_quantize_fallback_count"],
            seconds=data["seconds"], requested_main=data["requested_type"],
        )

    def to_dict(self) -> dict:
        return {
            "type": self.qtype, "file": self.path.name, "size": self.size,
            "bits_per_weight": round(self.bits_per_weight, 4), "tensors": self.n_tensors,
            "tensor_types": self.tensor_types,
            "weight_share": {k: round(v, 4) for k, v in self.weight_share.items()},
            "requested_type": self.requested_main, "dominant_type": self.dominant_type(),
            "fallbacks": self.fallbacks, "fallback_count": self.n_fallbacks,
            "llama_quantize_fallback_count": self.log_fallbacks, "seconds": round(self.seconds, 3),
            "summary": self.plain_summary(),
        }


@dataclass
class QuantizeResult:
    reports: list[QuantReport] = field(default_factory=list)
    mmproj: Path | None = None
    imatrix: Path | None = None


# --------------------------------------------------------------------------------------------------
# Types


_TYPE_LINE = re.compile(r"^\s*\d+\s+or\s+([A-Z0-9_]+)\s*:", re.MULTILINE)


@cache
def supported_types(quantize_tool: Path) -> tuple[str, ...]:
    """The type names this llama-quantize lists under "allowed quantization types"."""
    # llama-quantize --help exits 1 after printing the list.
    output = run_tool([quantize_tool, "--help"], what="listing quantization types",
                      fix="rebuild the toolchain with `smolconv setup --rebuild`", timeout=60, check=False).output
    return tuple(name for name in _TYPE_LINE.findall(output) if name != "COPY")


def canonical_type(name: str, toolchain: Toolchain) -> str:
    supported = supported_types(toolchain.tool("llama-quantize"))
    for candidate in supported:
        if candidate.upper() == name.upper():
            return candidate
    raise SmolconvError(f"llama-quantize has no type {name}", f"choose one of {', '.join(supported)}")


def requested_main_type(qtype: str) -> str | None:
    """The tensor type a file type is named after: Q4_K_M → Q4_K, Q8_0 → Q8_0, IQ3_M → IQ3_S."""
    candidates = [qtype, re.sub(r"_(S|M|L|XL)$", "", qtype), qtype.replace("_M", "_S")]
    for candidate in candidates:
        if candidate in GGMLQuantizationType.__members__:
            return candidate
    return None


def _block_size(type_name: str | None) -> int:
    if not type_name:
        return 1
    return GGML_QUANT_SIZES[GGMLQuantizationType[type_name]][0]


# --------------------------------------------------------------------------------------------------
# Reading a quantized file back


def tensor_report(path: Path, qtype: str) -> QuantReport:
    tensors = read_gguf_header(path).tensors
    types = Counter(t.tensor_type.name for t in tensors)
    elements = Counter()
    for t in tensors:
        elements[t.tensor_type.name] += t.n_elements
    total_elements = sum(elements.values())
    total_bytes = sum(t.n_bytes for t in tensors)
    main = requested_main_type(qtype)
    block = _block_size(main)
    # llama.cpp's rule: a quantized tensor whose rows (ne[0]) are not a multiple of the requested type's
    # block size gets a fallback type. Float tensors (norms, F32 embeddings in mmproj) were never quantized.
    fallbacks = Counter(
        t.tensor_type.name for t in tensors
        if t.tensor_type.name not in FLOAT_TYPES and t.shape[0] % block != 0
    )
    return QuantReport(
        qtype=qtype,
        path=path,
        size=path.stat().st_size,
        bits_per_weight=total_bytes * 8 / total_elements,
        n_tensors=len(tensors),
        tensor_types=dict(types.most_common()),
        weight_share={k: v / total_elements for k, v in elements.most_common()},
        fallbacks=dict(fallbacks.most_common()),
        requested_main=main,
    )


_LOG_FALLBACK = re.compile(r"(\d+) of (\d+) tensor\(s\) required fallback quantization")


# --------------------------------------------------------------------------------------------------
# Running llama-quantize


def quantize(options: QuantizeOptions, toolchain: Toolchain, progress: ProgressFn = no_progress,
             build: BuildDir | None = None) -> QuantizeResult:
    if options.out_dir is None:
        raise ValueError("quantize needs the build directory (QuantizeOptions.out_dir)")
    out_dir = Path(options.out_dir)
    with hold_folder(out_dir, wait=options.wait, on_wait=lambda text: progress(text, None)):
        manifest = (build or BuildDir.open(out_dir)).manifest
        convert_step = manifest.step("convert")
        if not convert_step:
            raise SmolconvError(f"{out_dir} has no converted model (no convert step in build.json)",
                                "run `smolconv convert CHECKPOINT --out " + str(out_dir) + "` first")
        model_name, mmproj_name = convert_step.outputs
        source = out_dir / model_name
        for name in (model_name, mmproj_name):
            if not (out_dir / name).is_file():
                raise SmolconvError(f"{out_dir / name} is missing", "run `smolconv convert` again")
            read_gguf_header(out_dir / name)  # a damaged file is named here, not in llama-quantize's log
        types = check_request(options, toolchain)
        result = QuantizeResult()
        imatrix = Path(options.imatrix) if options.imatrix else None
        if options.imatrix_text:
            imatrix = _compute_imatrix(manifest, toolchain, source, Path(options.imatrix_text), options, progress)
            result.imatrix = imatrix

        stem = model_name.removesuffix(".gguf").rsplit("-", 1)[0]
        for qtype in types:
            result.reports.append(_quantize_one(manifest, toolchain, source, out_dir / f"{stem}-{qtype}.gguf",
                                                qtype, imatrix, options, progress))
        if options.mmproj_type:
            mtype = canonical_type(options.mmproj_type, toolchain)
            target = out_dir / f"mmproj-{stem}-{mtype}.gguf"
            _quantize_one(manifest, toolchain, out_dir / mmproj_name, target, mtype, None, options, progress,
                          step_prefix="quantize-mmproj")
            result.mmproj = target
        manifest.save()
        return result


def check_request(options: QuantizeOptions, toolchain: Toolchain) -> list[str]:
    """Everything about a quantize request that can be wrong before any work starts; the canonical type names."""
    types = [canonical_type(t, toolchain) for t in options.types]
    if options.mmproj_type:
        canonical_type(options.mmproj_type, toolchain)
    if options.imatrix and options.imatrix_text:
        raise SmolconvError("--imatrix and --imatrix-text both given", "pass one of them")
    for flag, path in (("--imatrix", options.imatrix), ("--imatrix-text", options.imatrix_text)):
        if path is not None and not Path(path).is_file():
            raise SmolconvError(f"{flag} {path} does not exist", "pass the path of an existing file")
    needing = [t for t in types if t in NEEDS_IMATRIX]
    if needing and not (options.imatrix or options.imatrix_text):
        raise SmolconvError(f"{', '.join(needing)} need an importance matrix",
                            "pass --imatrix FILE or --imatrix-text FILE")
    return types


def _quantize_one(manifest: Manifest, toolchain: Toolchain, source: Path, target: Path, qtype: str,
                  imatrix: Path | None, options: QuantizeOptions, progress: ProgressFn,
                  step_prefix: str = "quantize") -> QuantReport:
    step = f"{step_prefix}:{qtype}"
    inputs = {source.name: manifest.sha256(source)}
    if imatrix:
        inputs[imatrix.name] = manifest.sha256(imatrix)
    params = {"type": qtype, "imatrix": imatrix.name if imatrix else None, "llama_cpp": toolchain.identity()}
    key = manifest.step_key(inputs, params)
    if manifest.up_to_date(step, key, [target], force=options.force):
        # The file is unchanged (same sha256), so the report stored with it still holds; reading the
        # GGUF again would cost seconds of parsing the vocabulary.
        report = QuantReport.from_dict(manifest.step(step).extra["report"], target)
        report.skipped = True
        return report

    progress(f"quantizing to {qtype}", None)
    started = time.monotonic()
    with manifest.staged_output(target) as tmp:
        args = [toolchain.tool("llama-quantize")]
        if imatrix:
            args += ["--imatrix", _imatrix_arg(imatrix, source.parent)]
        args += [source.absolute(), tmp.absolute(), qtype]
        if options.threads:
            args.append(str(options.threads))
        hashing = None if imatrix else _hash_while_written(toolchain, source, tmp, qtype)
        try:
            output = run_tool(args, what=f"quantizing {source.name} to {qtype}", cwd=source.parent,
                              fix="check the type name and free disk space", writes_to=tmp.parent).output
        except BaseException:
            if hashing is not None:
                hashing.cancel()
            raise
        report = tensor_report(tmp, qtype)
        digest = hashing.finish(read_gguf_header(tmp).data_offset) if hashing is not None else None
    if digest is not None:
        manifest.remember_sha256(target, digest)  # the rename kept the size and mtime it was computed for
    report.path = target
    report.seconds = time.monotonic() - started
    match = _LOG_FALLBACK.search(output)
    report.log_fallbacks = int(match.group(1)) if match else 0
    manifest.record_step(step, key, params, inputs, [target], report.seconds, extra={"report": report.to_dict()})
    manifest.save()
    return report


# One tensor in `llama-quantize --dry-run`'s list: name, shape, its type now, and the new size and type when
# it is converted ("size = 192.50 MiB -> 102.27 MiB (q8_0)"; a tensor kept as it is has one size and no type).
_DRY_RUN_TENSOR = re.compile(r"^\[\s*\d+/\s*\d+\]\s+(\S+)\s+- \[[^\]]*\], type =\s*(\w+), "
                             r"size =[^(\n]*(?:\((\w+)\))?\s*$", re.MULTILINE)


def _hash_while_written(toolchain: Toolchain, source: Path, output: Path, qtype: str) -> WrittenFileHash | None:
    """Hash `output` while llama-quantize writes it (hashing.WrittenFileHash), from the header it will write.

    This takes the pass over the written file off the wait after llama-quantize, onto the core it leaves idle.
    None when that header cannot be worked out beforehand: the
    file is then hashed after it is written, as any other.
    """
    header = expected_header(toolchain, source, qtype)
    return WrittenFileHash(output, header) if header is not None else None


def expected_header(toolchain: Toolchain, source: Path, qtype: str) -> bytes | None:
    """The header llama-quantize will write when it quantizes `source` to `qtype` (without an importance
    matrix, which adds entries about itself), which it writes last: the source's metadata with the new file
    type, and the tensors in the order and types `llama-quantize --dry-run` lists (milliseconds: it reads no
    tensor data). None for a type that is not a file type, or a dry run that fails or lists nothing."""
    file_type = LlamaFileType.__members__.get(f"MOSTLY_{qtype}")
    if file_type is None:
        return None
    dry_run = run_tool([toolchain.tool("llama-quantize"), "--dry-run", source.absolute(), qtype], check=False,
                       what=f"listing the tensor types of {qtype}", fix="check the type name")
    try:
        tensor_types = [(name, GGMLQuantizationType[(new or now).upper()])
                        for name, now, new in _DRY_RUN_TENSOR.findall(dry_run.output)]
    except KeyError:  # a type name this gguf-py does not know
        return None
    if dry_run.returncode != 0 or not tensor_types:
        return None
    return requantized_header(read_gguf_header(source), {"general.quantization_version": GGML_QUANT_VERSION,
                                                         "general.file_type": int(file_type)}, tensor_types)


def _imatrix_arg(imatrix: Path, out_dir: Path) -> str:
    """The matrix as llama-quantize (run in `out_dir`) is told it: it writes this text into the GGUF
    (quantize.imatrix.file). One the build computed, in `out_dir`, is named alone, so the same build in another
    directory gives the same bytes; one given with --imatrix keeps its full path."""
    if imatrix.parent.resolve() == out_dir.resolve():
        return imatrix.name
    return str(imatrix.absolute())


def _compute_imatrix(manifest: Manifest, toolchain: Toolchain, model: Path, text: Path,
                     options: QuantizeOptions, progress: ProgressFn) -> Path:
    out_dir = model.parent
    target = out_dir / IMATRIX_NAME
    inputs = {model.name: manifest.sha256(model), text.name: manifest.sha256(text)}
    params = {"llama_cpp": toolchain.identity()}
    key = manifest.step_key(inputs, params)
    if manifest.up_to_date("imatrix", key, [target], force=options.force):
        return target
    progress("computing the importance matrix with llama-imatrix", None)
    started = time.monotonic()
    with manifest.staged_output(target) as tmp:
        args = [toolchain.tool("llama-imatrix"), "-m", model, "-f", text, "-o", tmp, "--output-format", "gguf",
                "-c", str(IMATRIX_CONTEXT), "--no-ppl"]
        if options.threads:
            args += ["-t", str(options.threads)]
        run_tool(args, what="computing the importance matrix",
                 fix=f"give --imatrix-text a longer text (at least {2 * IMATRIX_CONTEXT} tokens)", writes_to=tmp.parent)
        if not tmp.is_file():
            raise SmolconvError("llama-imatrix wrote no file", "give --imatrix-text a longer text")
    manifest.record_step("imatrix", key, params, inputs, [target], time.monotonic() - started)
    manifest.save()
    return target
