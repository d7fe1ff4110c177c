"""smolconv's children: each started tied to smolconv's life, recorded, and stopped in order.

No orphans, SIGKILL included. Cleanup code cannot run when smolconv is killed with SIGKILL, so each child is
tied to smolconv by the kernel: it execs through launcher.py, which sets PR_SET_PDEATHSIG(SIGKILL) and then
execs the real program (the setting survives exec), so the child dies when smolconv does, however it dies.
 - Linux sends the parent-death signal when the *thread* that forked the child exits, not the process. So
   every child is forked by one spawner thread that lives until the process ends (it only waits on a queue),
   whichever thread asked for the child; a child started for a worker thread does not die with that worker.
 - The launcher is a separate exec (`python -I -S launcher.py`, ~20 ms) instead of subprocess's preexec_fn,
   which is documented unsafe in a process with threads (smolconv always has some: output readers, timers).
 - A program that starts a tree of its own (cmake) runs under supervisor.py instead, which takes the tree down.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from smolconv.process.signals import stop_signals_held

LAUNCHER = Path(__file__).with_name("launcher.py")
SUPERVISOR = Path(__file__).with_name("supervisor.py")
_TIE_TO_PARENT = sys.platform.startswith("linux")

# Children that are running now. On the way out (normal exit, an error, or a stop signal turned into
# Interrupted) smolconv stops whatever is left, so no llama-server outlives it and holds the GPU.
_running: dict[subprocess.Popen, None] = {}  # in start order
_running_lock = threading.Lock()


def stop_all_children() -> None:
    """Stop every child still running, the newest first (a server before what it was started for)."""
    with _running_lock:
        leftovers = list(reversed(_running))
    for proc in leftovers:
        stop(proc)


def forget(proc: subprocess.Popen) -> None:
    with _running_lock:
        _running.pop(proc, None)


def signal_group(proc: subprocess.Popen, signum: int) -> None:
    """Signal the child and whatever it started (cmake's make and compilers): each child leads its own group.

    Only while the child is unreaped, so its id cannot have been reused for another group.
    """
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)


def kill(proc: subprocess.Popen) -> None:
    signal_group(proc, signal.SIGKILL)
    proc.wait()


def stop(proc: subprocess.Popen, grace: float = 10) -> int:
    """SIGTERM (llama-server finishes the request in flight and frees the model), then SIGKILL after `grace`."""
    if proc.poll() is None:
        signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            kill(proc)
    forget(proc)
    return proc.returncode


atexit.register(stop_all_children)


class _Spawner:
    """The one long-lived thread that forks every child (see above)."""

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _serve(self) -> None:
        while True:
            argv, popen_args, reply = self._requests.get()
            try:
                proc = subprocess.Popen(argv, **popen_args)
            except BaseException as exc:  # handed to the caller, who raises it
                reply.put((None, exc))
                continue
            with _running_lock:
                _running[proc] = None  # recorded before the caller can be interrupted: never a lost handle
            reply.put((proc, None))

    def popen(self, argv: list[str], popen_args: dict) -> subprocess.Popen:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="smolconv-spawner", daemon=True)
                self._thread.start()
        reply: queue.SimpleQueue = queue.SimpleQueue()
        self._requests.put((argv, popen_args, reply))
        proc, exc = reply.get()
        if exc is not None:
            raise exc
        return proc


_spawner = _Spawner()


def _resolve(argv: Sequence[str], popen_args: Mapping) -> str:
    """The program's path, found as exec would find it, so a missing program is still FileNotFoundError."""
    program = argv[0]
    env = popen_args.get("env") or os.environ
    if os.sep not in program:
        found = shutil.which(program, path=env.get("PATH", os.defpath))
        if found is None:
            raise FileNotFoundError(2, "No such file or directory", program)
        return found
    path = Path(popen_args.get("cwd") or ".", program) if not os.path.isabs(program) else Path(program)
    if not path.exists():
        raise FileNotFoundError(2, "No such file or directory", program)
    if not os.access(path, os.X_OK) or path.is_dir():
        raise PermissionError(13, "Permission denied", program)
    return str(path.absolute())


def _tied(argv: Sequence[str], popen_args: Mapping, tree: bool) -> list[str]:
    if not _TIE_TO_PARENT:
        return list(argv)
    launcher = SUPERVISOR if tree else LAUNCHER
    return [sys.executable, "-I", "-S", str(launcher), str(os.getpid()), _resolve(argv, popen_args), *argv]


def start(argv: Sequence[str], *, tree: bool = False, **popen_args) -> subprocess.Popen:
    """subprocess.Popen through the spawner, tied to smolconv's life, with stop signals held until it is recorded.

    An Interrupted raised while the child is being started would lose the caller's handle on it; the child is
    in `_running` either way (stop_all_children stops it), and holding the signals lets the caller's own
    cleanup (run_tool, ServerProcess) see it too. `tree`: the program starts processes of its own, so it runs
    under the supervisor and the child's pid is the supervisor's, not the program's.
    """
    # Its own process group: a terminal's Ctrl-C reaches smolconv alone, which stops the child (and what the
    # child started) in order, instead of all of them receiving SIGINT at once.
    popen_args["start_new_session"] = True
    with stop_signals_held() as deliver:
        proc = _spawner.popen(_tied(argv, popen_args, tree), popen_args)  # a held interrupt outranks a failure
        try:
            deliver()
        except BaseException:
            kill(proc)
            forget(proc)
            raise
    return proc
