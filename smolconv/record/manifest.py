"""build.json: what a build was made from, how, and what it made.

Each step (convert, quantize:<TYPE>) records a key, the sha256 of its inputs plus its parameters and the
toolchain version; the step is skipped when the key is unchanged and its outputs are still the files it
wrote. Hashes are cached against (size, mtime) so that a rerun does not read gigabytes again.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from smolconv import __version__
from smolconv.core.errors import SmolconvError
from smolconv.core.fsutil import staged_file, write_text_atomic
from smolconv.core.hashing import BackgroundHash, sha256_file
from smolconv.record.views import AdapterRecord, OutputRecord, Section, SourceRecord, StepRecord

MANIFEST = "build.json"


@dataclass
class Manifest:
    """build.json, read and written through its typed accessors (views.py); the JSON itself stays private here."""

    path: Path
    _data: dict = field(default_factory=dict, repr=False)
    _pending: dict[str, BackgroundHash] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def load(cls, out_dir: Path) -> Manifest:
        path = Path(out_dir) / MANIFEST
        try:
            data = json.loads(path.read_text())
        except (FileNotFoundError, NotADirectoryError):  # no build yet (the directory may not be creatable)
            data = {}
        except OSError as exc:
            raise SmolconvError(f"cannot read {path} ({exc.strerror})", "check its permissions") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            # Starting over silently would disown every file it lists (and refuse them without --force).
            raise SmolconvError(f"{path} is not valid JSON ({exc})",
                                "undo the hand edit, or delete it and rebuild with --force") from None
        if not isinstance(data, dict):
            raise SmolconvError(f"{path} is not a JSON object", "delete it and rebuild with --force")
        data.setdefault("steps", {})
        data.setdefault("outputs", {})
        data.setdefault("hash_cache", {})
        return cls(path, data)

    def save(self) -> None:
        self._data["smolconv"] = __version__
        order = ("smolconv", "llama_cpp", "source", "steps", "outputs", "hash_cache")
        data = {k: self._data[k] for k in order if k in self._data}
        data.update({k: v for k, v in self._data.items() if k not in data})
        write_text_atomic(self.path, json.dumps(data, indent=2) + "\n")

    # -- what the build was made from ------------------------------------------------------------------

    @property
    def source(self) -> SourceRecord:
        """Where the checkpoint came from (an empty record in a directory no convert or export has written)."""
        record = self._data.get("source")
        return SourceRecord.from_dict(record if isinstance(record, dict) else None)

    def set_source(self, record: SourceRecord) -> None:
        self._data["source"] = record.to_dict()

    @property
    def adapter(self) -> AdapterRecord | None:
        """The adapter the build applied (None: a build of the checkpoint alone)."""
        record = self._data.get("adapter")
        return AdapterRecord.from_dict(record) if isinstance(record, dict) else None

    def set_adapter(self, record: AdapterRecord | None) -> None:
        """Record the build's adapter; None removes an earlier build's."""
        if record is None:
            self._data.pop("adapter", None)
        else:
            self._data["adapter"] = record.to_dict()

    @property
    def llama_cpp(self) -> dict | None:
        """The toolchain convert ran (Toolchain.describe: origin, version, commit, backend, …)."""
        return self._data.get("llama_cpp")

    def set_llama_cpp(self, description: dict) -> None:
        self._data["llama_cpp"] = description

    # -- the sections a stage writes whole -------------------------------------------------------------

    def section(self, name: Section) -> dict | None:
        """A stage's record (verify's summary, smoke's results, package's models, …); None before it ran."""
        return self._data.get(Section(name).value)

    def set_section(self, name: Section, record: dict | None) -> None:
        """Replace a stage's record (None removes it); saved with the next save()."""
        if record is None:
            self._data.pop(Section(name).value, None)
        else:
            self._data[Section(name).value] = record

    # -- hashing with a stat cache ---------------------------------------------------------------------

    def sha256(self, path: Path) -> str:
        stat = path.stat()
        key = str(path.resolve())
        digest = self._cached(key, stat)
        if digest:
            return digest
        pending = self._pending.pop(key, None)
        if pending is not None and (pending.size, pending.mtime_ns) == (stat.st_size, stat.st_mtime_ns):
            digest = pending.result()
        else:
            digest = sha256_file(path)
        self._remember(key, stat, digest)
        return digest

    def remember_sha256(self, path: Path, digest: str) -> None:
        """The sha256 of `path` as it is now, computed by the caller (e.g. while the file was written)."""
        self._remember(str(path.resolve()), path.stat(), digest)

    def _remember(self, key: str, stat: os.stat_result, digest: str) -> None:
        self._data["hash_cache"][key] = {"sha256": digest, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}

    def sha256_soon(self, paths) -> None:
        """Start hashing files that a later `sha256()` will ask for, on a background thread.

        For hashing beside a tool that is busy with other data (the converter with the next half, or with the
        checkpoint it reads anyway): a first build does not wait for gigabytes to be hashed after it.
        """
        for path in map(Path, paths):
            key = str(path.resolve())
            if key not in self._pending and self._cached(key, path.stat()) is None:
                self._pending[key] = BackgroundHash(path)

    def _cached(self, key: str, stat: os.stat_result) -> str | None:
        cached = self._data["hash_cache"].get(key)
        if cached and cached["size"] == stat.st_size and cached["mtime_ns"] == stat.st_mtime_ns:
            return cached["sha256"]
        return None

    def up_to_date(self, step: str, key: str, targets: list[Path], *, force: bool) -> bool:
        """True when `step` can be skipped. Otherwise it will run: check that it overwrites nothing of the user's.

        --force redoes every step; an output this build wrote before is regenerated when stale; a file this
        build did not write is the user's, and replacing it needs --force.
        """
        if force:
            return False
        if self.is_current(step, key):
            return True
        self.refuse_foreign(targets, force=force)
        return False

    def refuse_foreign(self, targets: list[Path], *, force: bool) -> None:
        """A file at a target name that this build did not write is the user's: replacing it needs --force."""
        if force:
            return
        for path in targets:
            if path.exists() and self.output_name(path) not in self._data["outputs"]:
                raise SmolconvError(f"{path} already exists and was not written by this build",
                                    "pass --force to replace it, or move it out of the way")

    def claim(self, path: Path) -> None:
        """Record `path` as this build's before it appears under its name (see fsutil.staged_file)."""
        name = self.output_name(path)
        if name not in self._data["outputs"]:
            self._data["outputs"][name] = {"step": "claimed"}  # record_step fills in its sha256 and size
            self.save()

    def staged_output(self, path: Path):
        """fsutil.staged_file for an output of this build: the name is claimed here just before the rename."""
        return staged_file(path, lambda: self.claim(path))

    def output(self, name: str) -> OutputRecord | None:
        """What build.json records of the output `name` (see output_name); None for a file it does not list."""
        record = self._data["outputs"].get(name)
        return OutputRecord.from_dict(record) if record else None

    def recorded_sha256(self, name: str) -> str | None:
        """The sha256 recorded for the output `name` when it was written (None: not listed, or only claimed)."""
        record = self.output(name)
        return record.sha256 if record else None

    def record_output(self, path: Path, step: str, params: dict | None = None) -> None:
        """Record `path`, as it is now, as written by `step` (record_step does this for a step's outputs)."""
        record = {"sha256": self.sha256(path), "size": path.stat().st_size, "step": step}
        if params is not None:
            record["params"] = params
        self._data["outputs"][self.output_name(path)] = record

    def forget_outputs(self, names) -> None:
        """Drop outputs from the record (files an earlier run wrote that this one removed)."""
        for name in names:
            self._data["outputs"].pop(name, None)

    # -- steps -----------------------------------------------------------------------------------------

    def step_key(self, inputs: dict[str, str], params: dict) -> str:
        blob = json.dumps({"inputs": inputs, "params": params}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def has_steps(self) -> bool:
        """True in a build directory smolconv wrote (a step is on record)."""
        return bool(self._data["steps"])

    def step(self, name: str) -> StepRecord | None:
        """The record of step `name` (convert, quantize:Q4_K_M, mlx:convert, …); None when it has not run."""
        record = self._data["steps"].get(name)
        return StepRecord.from_dict(record) if record else None

    def steps(self, prefix: str = "") -> dict[str, StepRecord]:
        """The steps on record whose name starts with `prefix` (`quantize:`), in the order they first ran."""
        return {name: StepRecord.from_dict(record) for name, record in self._data["steps"].items()
                if name.startswith(prefix)}

    def set_step(self, name: str, record: StepRecord) -> None:
        """Record a step that is not a file-writing step of record_step's kind (a check: key, params, passed)."""
        self._data["steps"][name] = record.to_dict()

    def is_current(self, step: str, key: str) -> bool:
        record = self._data["steps"].get(step)
        if not record or record.get("key") != key:
            return False
        for name in record.get("outputs", []):
            output = self._data["outputs"].get(name)
            path = self.path.parent / name  # outputs are named by their path inside the build directory
            if not output or not path.is_file() or path.stat().st_size != output.get("size"):
                return False
            if self.sha256(path) != output.get("sha256"):
                return False
        return True

    def output_name(self, path: Path) -> str:
        """How build.json names an output: its path inside the build directory (`merged/config.json`)."""
        try:
            return Path(path).resolve().relative_to(self.path.parent.resolve()).as_posix()
        except ValueError:
            return Path(path).name

    def record_step(self, step: str, key: str, params: dict, inputs: dict[str, str], outputs: list[Path],
                    seconds: float, extra: dict | None = None) -> None:
        for path in outputs:
            self.record_output(path, step, params)
        self._data["steps"][step] = {
            "key": key,
            "params": params,
            "inputs": inputs,
            "outputs": [self.output_name(p) for p in outputs],
            "seconds": round(seconds, 3),
            **(extra or {}),
        }
