"""Typed views of build.json's sections: what a build was made from (source, adapter), and how each step ran.

Manifest keeps build.json as it is on disk and hands these out (Manifest.source, .adapter, .step(), …); each view's
`to_dict` writes its keys in the order smolconv always wrote them, and keeps the keys it does not know, so that a
record read and written again is the same JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any


class Section(StrEnum):
    """The top-level sections of build.json that a stage writes whole (Manifest.section / set_section)."""

    VERIFY = "verify"          # verify's report without its per-prompt rows (every format's verify)
    SMOKE = "smoke"            # smoke's summary per "<variant>:<backend>"
    PACKAGE = "package"        # package's settings, models and plans (and what --create made)
    MLX = "mlx"                # export-mlx's settings (bits, dtype, group size, the checkpoint it exported)
    ONNX = "onnx"              # export-onnx's exporter, opset, variants and graphs
    LAST_BUILD = "last_build"  # build's stages, with their times, and whether it passed
    EVAL = "eval"              # eval's summary per cases file (its name): key, passed, each run's measures


# The keys Source.to_record writes, in order: where a checkpoint (or an adapter) came from.
_ORIGIN_KEYS = ("model", "repo_id", "revision", "requested_revision", "path")


@dataclass
class SourceRecord:
    """build.json's "source": the checkpoint a build was made from (source.pull.Source.to_record), and the sha256
    of its files and where its chat template came from (both added by convert, together)."""

    model: str = ""                      # what the user asked for: alias, Hub id or directory
    repo_id: str | None = None           # None for a local directory
    revision: str | None = None          # the commit the snapshot resolved to
    requested_revision: str | None = None
    path: str | None = None              # the checkpoint directory, resolved
    files: dict[str, str] | None = None  # convert: file name -> sha256 (None: not converted, e.g. an export)
    chat_template: str | None = None     # convert: the file the template came from (None: SmolVLM2's)
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as they were

    @classmethod
    def from_dict(cls, data: dict | None) -> SourceRecord:
        rest = dict(data or {})
        known = {k: rest.pop(k) for k in (*_ORIGIN_KEYS, "files", "chat_template") if k in rest}
        return cls(**known, extra=rest)

    def to_dict(self) -> dict:
        record = {"model": self.model, "repo_id": self.repo_id, "revision": self.revision,
                  "requested_revision": self.requested_revision, "path": self.path}
        if self.files is not None:  # convert writes both, the template's source as null when there is none
            record |= {"files": self.files, "chat_template": self.chat_template}
        return record | self.extra

    @property
    def checkpoint(self) -> Path | None:
        """The checkpoint directory build.json names (None when it names none)."""
        return Path(self.path) if self.path else None


@dataclass
class AdapterRecord:
    """build.json's "adapter": where a PEFT adapter came from (as SourceRecord), the sha256 of its files, what it is
    (source.adapter.AdapterInfo.to_record: name, rank, target modules, …) and what smolconv made of it."""

    model: str = ""
    repo_id: str | None = None
    revision: str | None = None
    requested_revision: str | None = None
    path: str | None = None              # the adapter directory
    files: dict[str, str] | None = None  # file name -> sha256
    format: str | None = None            # merge or gguf
    merged: str | None = None            # merge: the merged checkpoint, by its name in the build directory
    gguf: str | None = None              # gguf: the adapter GGUF's file name
    # AdapterInfo.to_record (name, r, alpha, …), and any key this version does not know, in their order.
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> AdapterRecord:
        rest = dict(data)
        known = {k: rest.pop(k) for k in (*_ORIGIN_KEYS, "files", "format", "merged", "gguf") if k in rest}
        return cls(**known, details=rest)

    def to_dict(self) -> dict:
        record = {"model": self.model, "repo_id": self.repo_id, "revision": self.revision,
                  "requested_revision": self.requested_revision, "path": self.path,
                  **({"files": self.files} if self.files is not None else {}), **self.details}
        if self.format is not None:
            record["format"] = self.format
        if self.merged is not None:
            record["merged"] = self.merged
        if self.gguf is not None:
            record["gguf"] = self.gguf
        return record

    @property
    def name(self) -> str | None:
        """The adapter's name (its directory's or Hub repo's), what a fine-tune's files and models are named after."""
        return self.details.get("name")


@dataclass
class StepRecord:
    """One entry of build.json's "steps": the key the step ran with (sha256 of its inputs and parameters), what it
    read and wrote, and how long it took. Every field is optional, as on disk: a check (mlx:verify) records no
    inputs or outputs but whether it passed."""

    key: str | None = None
    params: dict[str, Any] | None = None
    inputs: dict[str, str] | None = None   # input name -> sha256
    outputs: list[str] | None = None       # the files it wrote, by their name in the build directory
    passed: bool | None = None             # a check's verdict
    seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # what a step adds: quantize's report, export-mlx's fixes, …

    @classmethod
    def from_dict(cls, data: dict) -> StepRecord:
        rest = dict(data)
        known = {k: rest.pop(k) for k in ("key", "params", "inputs", "outputs", "passed", "seconds") if k in rest}
        return cls(**known, extra=rest)

    def to_dict(self) -> dict:
        record: dict[str, Any] = {}
        for name in ("key", "params", "inputs", "outputs", "passed", "seconds"):
            value = getattr(self, name)
            if value is not None:
                record[name] = value
        return record | self.extra


@dataclass
class OutputRecord:
    """One entry of build.json's "outputs": a file this build wrote, by the step that wrote it. A file only claimed
    (named before its rename, see Manifest.claim) has no sha256 or size yet."""

    step: str
    sha256: str | None = None
    size: int | None = None
    params: dict[str, Any] | None = None  # the writing step's parameters
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> OutputRecord:
        rest = dict(data)
        known = {k: rest.pop(k) for k in ("step", "sha256", "size", "params") if k in rest}
        return cls(**{"step": "", **known}, extra=rest)

    def to_dict(self) -> dict:
        record: dict[str, Any] = {}
        if self.sha256 is not None:
            record["sha256"] = self.sha256
        if self.size is not None:
            record["size"] = self.size
        record["step"] = self.step
        if self.params is not None:
            record["params"] = self.params
        return record | self.extra


