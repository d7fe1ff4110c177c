"""sha256 of files, streamed so multi-GB weights never sit in memory."""

from __future__ import annotations

import hashlib
import mmap
import os
import threading
import time
from pathlib import Path

_CHUNK = 64 * 1024 * 1024


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:  # mmap refuses an empty file
            return digest.hexdigest()
        # Hashing straight from the page cache through a map skips the copy into a read buffer.
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            view = memoryview(mapped)
            try:
                for start in range(0, size, _CHUNK):
                    digest.update(view[start:start + _CHUNK])  # releases the GIL: background hashes run beside
                    # Unmap what was hashed (the page cache keeps it), so the process's RSS stays one chunk
                    # rather than growing by the file's size.
                    mapped.madvise(mmap.MADV_DONTNEED, start, min(_CHUNK, size - start))
            finally:
                view.release()
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


class WrittenFileHash:
    """The sha256 of a file computed while a program writes it, for a writer that puts zeros where its header
    goes, writes the rest front to back, and writes the header last (llama-quantize). Given the header it will
    write, this hashes that, then follows the file as it grows on a daemon thread: the hash is done moments
    after the program, instead of a pass over gigabytes after it.

    `finish()` compares the header the program really wrote with the one given; if they differ, the file is
    hashed again from the start, so a wrong prediction costs time, never a wrong digest.
    """

    _POLL = 0.02

    def __init__(self, path: str | Path, header: bytes):
        self.path, self.header = Path(path), header
        self.header_matched: bool | None = None  # known after finish()
        self._digest = hashlib.sha256(header)
        self._writer_done = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._follow, name=f"sha256 {self.path.name}", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        try:
            while True:
                done = self._writer_done.is_set()  # read before trying: a writer that is done made the file
                try:
                    fd = os.open(self.path, os.O_RDONLY)
                    break
                except FileNotFoundError:
                    if done:
                        raise
                    self._writer_done.wait(self._POLL)
            try:
                self._hash_as_written(fd)
            finally:
                os.close(fd)
        except BaseException as exc:  # handed to the caller of finish()
            self._error = exc

    def _hash_as_written(self, fd: int) -> None:
        buffer = memoryview(bytearray(16 * 1024 * 1024))
        position = len(self.header)  # the bytes before it are zeros until the writer's last write
        while True:
            done = self._writer_done.is_set()  # read before the size: once set, the size read after is final
            size = os.fstat(fd).st_size
            if size > position:
                count = os.preadv(fd, [buffer[:min(len(buffer), size - position)]], position)
                self._digest.update(buffer[:count])
                position += count
            elif done:
                return
            else:
                time.sleep(self._POLL)

    def finish(self, header_size: int) -> str:
        """The file's sha256, once its writer has exited successfully; `header_size` is the length of what it
        wrote last (the bytes after it were hashed as they were written and must not have changed since)."""
        self._writer_done.set()
        self._thread.join()
        if self._error is not None:
            raise self._error
        with open(self.path, "rb") as f:
            self.header_matched = header_size == len(self.header) and f.read(header_size) == self.header
        return self._digest.hexdigest() if self.header_matched else sha256_file(self.path)

    def cancel(self) -> None:
        """The writer failed or was stopped: let the thread end (it is a daemon: nothing waits for it)."""
        self._writer_done.set()
