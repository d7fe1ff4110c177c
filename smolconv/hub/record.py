"""The build record `publish` uploads beside a build's files: `smolconv.json`.

It says what the repo's files were built from and with, and which files they are, as ggml-org's converter keeps
`.src_sha` and `.produced_files` in each repo it publishes: the source's and the adapter's commits (a Hub commit,
or for a local directory the sha256 of its files), smolconv's version, the llama.cpp commit, the GGUF variants, and
the sha256 of every file of the repo. `smolconv batch` reads it before downloading anything: an entry whose inputs
are the record's is not built again (`RecordInputs.differences`), so a weekly run costs nothing when nothing moved.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from smolconv import __version__
from smolconv.core.errors import SmolconvError
from smolconv.core.hashing import sha256_file
from smolconv.hub.repo import RepoFile, hub_errors
from smolconv.record.manifest import Manifest
from smolconv.record.views import AdapterRecord, SourceRecord
from smolconv.source.pull import not_on_hub

RECORD_FILE = "smolconv.json"
RECORD_VERSION = 1
# The fixes of the Hub's other answers while batch reads what it compares (the entry fails; the others go on).
RETRY = "try again later (the entries that ran are not built again)"
ELSEWHERE = "build from local directories with --no-publish"


@dataclass(frozen=True)
class Origin:
    """A checkpoint or an adapter as the record names it: its Hub repo and commit, or (a local directory) no repo
    and `sha256:<digest>` of its files (files_commit)."""

    repo_id: str | None
    commit: str | None

    def to_dict(self) -> dict:
        return {"repo_id": self.repo_id, "commit": self.commit}

    @classmethod
    def from_dict(cls, data) -> Origin | None:
        if not isinstance(data, dict):
            return None
        return cls(data.get("repo_id"), data.get("commit"))

    def __str__(self) -> str:
        commit = (self.commit or "unknown")
        short = commit[:14] if commit.startswith("sha256:") else commit[:7]
        return f"{self.repo_id}@{short}" if self.repo_id else f"a local directory ({short})"


def files_commit(files: dict[str, str]) -> str:
    """A local directory's stand-in for a commit: the sha256 of its file names and their sha256."""
    listing = "".join(f"{name} {digest}\n" for name, digest in sorted(files.items()))
    return "sha256:" + hashlib.sha256(listing.encode()).hexdigest()


def origin_of(record: SourceRecord | AdapterRecord | None) -> Origin | None:
    """What build.json says a build was made from, as an Origin (None: no adapter)."""
    if record is None:
        return None
    if record.repo_id:
        return Origin(record.repo_id, record.revision)
    return Origin(None, files_commit(record.files) if record.files else None)


@dataclass(frozen=True)
class RecordInputs:
    """What decides a published repo's files, all of it known before anything is downloaded."""

    format: str                 # gguf or mlx (what publish uploads)
    source: Origin
    adapter: Origin | None
    smolconv: str
    llama_cpp: str | None       # the commit of the llama.cpp that converted and quantized
    types: tuple[str, ...] = ()  # the GGUF variants, sorted (none for MLX)
    # The pinned llama.cpp's source, the llama-cpp-python sdist version (a PyPI release never changes, and so neither
    # does the commit it vendors); None for a llama.cpp of the user's own. Compared when the commit is not known yet
    # (a job or CI runner that builds llama.cpp only for an entry that needs it).
    llama_cpp_python: str | None = None

    def to_dict(self) -> dict:
        return {"format": self.format, "source": self.source.to_dict(),
                "adapter": self.adapter.to_dict() if self.adapter else None, "smolconv": self.smolconv,
                "llama_cpp": self.llama_cpp, "llama_cpp_python": self.llama_cpp_python, "types": list(self.types)}

    def differences(self, published: RecordInputs) -> list[str]:
        """What differs from the published record, one phrase each ("source A → B"); empty when the repo holds what
        this build would make. A value nobody knows (a commit that could not be resolved, a llama.cpp of the
        user's own without a commit, for a GGUF build) is a difference too."""
        compared = [("format", self.format, published.format), ("source", self.source, published.source),
                    ("adapter", self.adapter, published.adapter), ("smolconv", self.smolconv, published.smolconv),
                    ("types", ", ".join(self.types), ", ".join(published.types))]
        if self.format == "gguf" and (self.llama_cpp is not None or self.llama_cpp_python is None):
            compared.append(("llama.cpp", self.llama_cpp, published.llama_cpp))
        elif self.format == "gguf":  # the pinned llama.cpp, not built yet: the same pin is the same commit
            compared.append(("llama.cpp (llama-cpp-python)", self.llama_cpp_python, published.llama_cpp_python))
        found = [f"{what} {theirs or 'none'} → {ours or 'none'}" for what, ours, theirs in compared if ours != theirs]
        unknown = [o for o in (self.source, self.adapter) if o is not None and o.commit is None]
        if unknown:
            found.append(f"the commit of {', '.join(o.repo_id or 'a local directory' for o in unknown)} is unknown")
        if self.format == "gguf" and self.llama_cpp is None and self.llama_cpp_python is None:
            found.append("this llama.cpp has no commit to compare")
        return found


@dataclass
class BuildRecord:
    inputs: RecordInputs
    files: dict[str, str] = field(default_factory=dict)  # every file of the repo (this one aside) -> sha256

    def to_json(self) -> str:
        return json.dumps({"record": RECORD_VERSION, **self.inputs.to_dict(), "files": self.files}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> BuildRecord | None:
        """The record, or None when it is not one this version reads (then the repo is built again)."""
        try:
            data = json.loads(text)
            source = Origin.from_dict(data["source"])
            if data.get("record") != RECORD_VERSION or source is None:
                return None
            inputs = RecordInputs(format=str(data["format"]), source=source,
                                  adapter=Origin.from_dict(data.get("adapter")), smolconv=str(data["smolconv"]),
                                  llama_cpp=data.get("llama_cpp"), types=tuple(sorted(data.get("types") or ())),
                                  llama_cpp_python=data.get("llama_cpp_python"))
            return cls(inputs, dict(data.get("files") or {}))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


def build_record(manifest: Manifest, files: list[RepoFile], format: str, types: tuple[str, ...]) -> BuildRecord:
    """The record of a repo publish is about to upload: from build.json, and the sha256 of each of its files (a build
    file's as build.json recorded it when written, else hashed now; a text file's from its text)."""
    llama_cpp = manifest.llama_cpp or {}
    inputs = RecordInputs(format=format, source=origin_of(manifest.source) or Origin(None, None),
                          adapter=origin_of(manifest.adapter), smolconv=__version__,
                          llama_cpp=llama_cpp.get("commit"), types=tuple(sorted(types)),
                          llama_cpp_python=llama_cpp.get("llama_cpp_python") if llama_cpp.get("origin") == "pinned"
                          else None)
    digests = {}
    for repo_file in files:
        if repo_file.text is not None:
            digests[repo_file.name] = hashlib.sha256(repo_file.text.encode()).hexdigest()
        elif repo_file.data is not None:
            digests[repo_file.name] = hashlib.sha256(repo_file.data).hexdigest()
        elif repo_file.source is not None:
            recorded = manifest.recorded_sha256(manifest.output_name(repo_file.source))
            digests[repo_file.name] = recorded or sha256_file(repo_file.source)
    return BuildRecord(inputs, digests)


def record_file(record: BuildRecord) -> RepoFile:
    return RepoFile(RECORD_FILE, text=record.to_json())


def read_published(repo_id: str, *, token: str | None) -> BuildRecord | None:
    """The record in the repo's main branch: None when the repo or the file does not exist (yet), or is not a
    record this version reads. Other answers of the Hub are one-line errors."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    with tempfile.TemporaryDirectory(prefix="smolconv-record-") as cache, \
            hub_errors(repo_id, action="reading the build record of", retry=RETRY, elsewhere=ELSEWHERE):
        try:
            path = hf_hub_download(repo_id, RECORD_FILE, repo_type="model", cache_dir=cache, token=token)
        except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError):
            return None
        return BuildRecord.from_json(Path(path).read_text(encoding="utf-8", errors="replace"))


def resolve_commit(repo_id: str, revision: str | None, *, token: str | None) -> str:
    """The commit `revision` (default: main) of a Hub model repo is at now: one small API call, nothing downloaded."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    with hub_errors(repo_id, action="looking up the commit of", retry=RETRY, elsewhere=ELSEWHERE):
        try:
            info = HfApi(token=token).model_info(repo_id, revision=revision)
        except (RevisionNotFoundError, RepositoryNotFoundError) as exc:
            raise not_on_hub(exc, repo_id, revision, "as revision") from None
    if not info.sha:
        raise SmolconvError(f"the Hub named no commit for {repo_id}@{revision or 'main'}", "try again later")
    return info.sha
