"""sha256 of files, streamed so multi-GB weights never sit in memory."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

_CHUNK = 8 * 1024 * 1024


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class BackgroundHash:
    """The sha256 of one file, computed on a daemon thread while the caller goes on (hashlib releases the GIL
    while it hashes, so this runs beside a tool busy with other data). Records the size and mtime it started
    from, so a caller can tell whether the file changed since."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        stat = self.path.stat()
        self.size, self.mtime_ns = stat.st_size, stat.st_mtime_ns
        self._digest: str | None = None
        self._error: BaseException | None = None
        # A daemon: an interrupted smolconv does not wait for gigabytes to be hashed before it exits.
        self._thread = threading.Thread(target=self._run, name=f"sha256 {self.path.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._digest = sha256_file(self.path)
        except BaseException as exc:  # handed to the caller of result()
            self._error = exc

    def result(self) -> str:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._digest
