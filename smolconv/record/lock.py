"""One smolconv at a time writes a build folder.

A lock file per folder, held with the kernel's flock (through filelock): the kernel drops it when its holder
exits, however it exits (SIGKILL included), so a lock is never stale. Beside it, the holder writes who it is, so a
second command can name it. The files live in smolconv's cache (keyed by the folder's path), not in the folder: a
command refused for bad input leaves no folder behind, and a build folder holds only what the build wrote. Within
one process the lock is re-entrant: `build` holds it and the stages it calls take it again without waiting on
themselves.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from smolconv.core.errors import SmolconvError
from smolconv.core.fsutil import ensure_writable_dir, write_text_atomic
from smolconv.llamacpp.toolchain import cache_root

_held: dict[Path, int] = {}
_guard = threading.Lock()


class FolderBusy(SmolconvError):
    """Another smolconv is writing the folder: nothing is wrong with the input, try again later."""

    exit_code = 1


def lock_paths(folder: Path) -> tuple[Path, Path]:
    """The lock file of `folder` and the note its holder writes beside it."""
    key = hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()[:32]
    locks = cache_root() / "locks"
    return locks / f"{key}.lock", locks / f"{key}.json"


def holder(folder: Path) -> dict | None:
    """Who holds `folder`'s lock, as it wrote itself down (None if nobody says)."""
    try:
        return json.loads(lock_paths(folder)[1].read_text())
    except (OSError, ValueError):
        return None


def _describe(who: dict | None) -> str:
    if not who:
        return "another smolconv process"
    since = time.strftime("%H:%M:%S", time.localtime(who.get("since", 0)))
    return f"smolconv process {who.get('pid')} (`{who.get('command', '?')}`, since {since})"


@contextlib.contextmanager
def hold_folder(folder: Path, *, wait: bool = False, on_wait=lambda text: None) -> Iterator[None]:
    """Hold `folder` for writing while the block runs; refuse in one line, or wait with `wait`, if another
    process holds it."""
    folder = Path(folder).resolve()
    with _guard:
        if folder in _held:
            _held[folder] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _guard:
                _held[folder] -= 1
        return
    lock_file, holder_file = lock_paths(folder)
    ensure_writable_dir(lock_file.parent)
    lock = FileLock(lock_file)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        who = _describe(holder(folder))
        if not wait:
            raise FolderBusy(f"{folder} is being written by {who}",
                             "wait for it to finish, or pass --wait to wait for it") from None
        on_wait(f"waiting for {who} to finish with {folder}")
        lock.acquire()
    try:
        write_text_atomic(holder_file, json.dumps({
            "folder": str(folder), "pid": os.getpid(), "command": " ".join(["smolconv", *sys.argv[1:]]),
            "since": time.time()}) + "\n")
        with _guard:
            _held[folder] = 1
        try:
            yield
        finally:
            with _guard:
                del _held[folder]
            holder_file.unlink(missing_ok=True)
    finally:
        lock.release()
