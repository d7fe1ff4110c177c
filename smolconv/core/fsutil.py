"""Writing files so that a crash or Ctrl-C never leaves a partial file under its final name."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from smolconv.core.errors import SmolconvError


def ensure_writable_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SmolconvError(f"cannot create output directory {directory} ({exc.strerror})",
                            "choose a directory you can write to with --out") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise SmolconvError(f"output directory {directory} is not writable",
                            "choose a directory you can write to with --out")


@contextlib.contextmanager
def staged_dir(final: Path, *, force: bool) -> Iterator[Path]:
    """Yield an empty sibling directory to fill; on success it replaces `final` in one rename.

    Without `force`, an existing non-empty `final` is an error rather than being overwritten.
    """
    recover_replaced(final)
    if final.exists() and any(final.iterdir()) and not force:
        raise SmolconvError(f"{final} already exists and is not empty", "pass --force to replace it")
    ensure_writable_dir(final.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private; the result should look like mkdir's
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if final.exists():
        old = _replaced_path(final)
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, final)


def _replaced_path(final: Path) -> Path:
    """Where staged_dir moves the folder it replaces, between its two renames."""
    return final.with_name(f".{final.name}.old")


def recover_replaced(final: Path) -> None:
    """Finish what a staged_dir killed between its renames left (SIGKILL runs no cleanup).

    Killed after moving the old `final` aside but before the new one took its name, `final` is missing: the old
    folder goes back, as if that run had never finished. Killed after the new one took its name, the old one is
    only a leftover: it goes. The old folder is whole in both cases (it is only deleted once `final` exists).
    """
    old = _replaced_path(final)
    if not old.is_dir() or old.is_symlink():
        return
    if final.exists() or final.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(old, final)


def partial_path(final: Path) -> Path:
    """The hidden name a file is written under until it is complete and checked."""
    return final.with_name(f".{final.name}.partial")


@contextlib.contextmanager
def staged_file(final: Path, before_rename: Callable[[], None] | None = None) -> Iterator[Path]:
    """Yield the hidden name to write `final` under; rename it into place only if the block succeeds.

    Whatever goes wrong inside the block (a tool failing, a check failing, Ctrl-C), the partial file is
    removed and nothing appears under the final name. `before_rename` runs once the file is complete: a build
    claims the name in build.json there, so a SIGKILL right after the rename leaves a file the next run knows
    it wrote (and may replace) rather than one it must refuse as the user's.
    """
    tmp = partial_path(final)
    try:
        yield tmp
        if before_rename:
            before_rename()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)


def write_text_atomic(final: Path, text: str) -> None:
    """Write `text` to `final` in one rename: a reader sees the old file or the new one, never half of one.

    The staged name carries the process id, so two processes writing the same small file never share it.
    """
    tmp = final.with_name(f".{final.name}.{os.getpid()}.partial")
    try:
        tmp.write_text(text)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_partials(directory: Path) -> list[Path]:
    """Remove staged files and directories a killed run left in `directory` (SIGKILL runs no cleanup).

    Every staged name is hidden and ends in `.partial` (partial_path, staged_dir), so nothing else matches.
    """
    removed = []
    for path in sorted(directory.rglob(".*.partial")) if directory.is_dir() else []:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed
