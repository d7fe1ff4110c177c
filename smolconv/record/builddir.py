"""A build directory, opened once per command and handed to every stage that command runs.

It holds the one Manifest (build.json) those stages read and write, so a stage never reloads a record another
stage has just written, and it reads each GGUF header once (a stage that writes files, like quantize, tells
it). Stages take a BuildDir when their caller has one and open their own when called alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from smolconv.record.manifest import Manifest
from smolconv.record.variants import Projector, TextModel, Variant, manifest_variants, read_projector, read_text_model


@dataclass
class BuildDir:
    path: Path
    manifest: Manifest
    # GGUF headers already read, by path; an entry holds while the file's size and mtime are unchanged.
    _headers: dict[Path, tuple[tuple[int, int], TextModel | Projector]] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, path: Path | str) -> BuildDir:
        return cls(Path(path), Manifest.load(Path(path)))

    def variants(self, types: tuple[str, ...] = ()) -> list[Variant]:
        """The variants the build holds (all of them, or `types`), as build.json lists them now."""
        return manifest_variants(self.path, self.manifest, types, self._reader(read_text_model),
                                 self._reader(read_projector))

    def variant(self, name: str) -> Variant:
        return self.variants((name,))[0]

    def save(self) -> None:
        self.manifest.save()

    def _reader(self, read):
        def cached(path: Path):
            stat = path.stat()
            stamp = (stat.st_size, stat.st_mtime_ns)
            known = self._headers.get(path)
            if known is None or known[0] != stamp:
                known = self._headers[path] = (stamp, read(path))
            return known[1]

        return cached
