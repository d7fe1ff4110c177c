"""staged_dir replacing a folder: a SIGKILL between its renames is recovered by the next run.

The kill is real: a child process replaces a folder with staged_dir and SIGKILLs itself at the chosen point
(os.replace / shutil.rmtree are wrapped in the child only to find that point).
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from smolconv.core.errors import SmolconvError
from smolconv.core.fsutil import staged_dir

_CHILD = """
import os, shutil, signal, sys
from pathlib import Path
from smolconv.core.fsutil import staged_dir

final, point = Path(sys.argv[1]), sys.argv[2]
replace, rmtree = os.replace, shutil.rmtree

def replace_then_maybe_die(src, dst):
    if point == "before the new one is in place" and Path(src).name.endswith(".partial"):
        os.kill(os.getpid(), signal.SIGKILL)
    replace(src, dst)

def rmtree_or_die(path, *args, **kwargs):
    if point == "before the old one is removed" and Path(path).name.endswith(".old") and Path(path).exists():
        os.kill(os.getpid(), signal.SIGKILL)
    rmtree(path, *args, **kwargs)

os.replace, shutil.rmtree = replace_then_maybe_die, rmtree_or_die
with staged_dir(final, force=True) as staging:
    (staging / "data.txt").write_text("new")
"""


@pytest.mark.parametrize("point, kept", [("before the new one is in place", "old"),
                                         ("before the old one is removed", "new")])
def test_staged_dir_recovers_from_sigkill_between_renames(point, kept, tmp_path):
    final = tmp_path / "folder"
    final.mkdir()
    (final / "data.txt").write_text("old")
    child = subprocess.run([sys.executable, "-c", _CHILD, str(final), point], capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, child.stderr
    leftover = tmp_path / ".folder.old"
    assert leftover.is_dir()  # the state a SIGKILL leaves there
    assert final.exists() == (kept == "new")

    # The next run, without --force: the folder it finds is whole, and no `.old` is left beside it (the killed
    # run's staging folder may be: a hidden `.partial`, like every staged name).
    with pytest.raises(SmolconvError, match="already exists"), staged_dir(final, force=False):
        pass
    assert (final / "data.txt").read_text() == kept
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".partial")] == ["folder"]
