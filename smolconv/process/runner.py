"""The one place smolconv runs external programs.

llama.cpp's tools, cmake, pip and ollama all go through `run_tool`, which turns a missing program, a
non-zero exit or a timeout into a ToolFailed that names the program and quotes the last lines it printed.
How children are started, tied to smolconv's life and stopped lives in smolconv.process.
"""

from __future__ import annotations

import collections
import errno
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from smolconv.core.errors import SmolconvError, ToolFailed
from smolconv.process.children import forget as _forget
from smolconv.process.children import kill as _kill
from smolconv.process.children import signal_group, stop_all_children
from smolconv.process.children import start as _start
from smolconv.process.children import stop as _stop
from smolconv.process.signals import STOP_SIGNALS, Interrupted, install_stop_handlers

__all__ = ["STOP_SIGNALS", "Interrupted", "ServerProcess", "ToolResult", "command_line", "install_stop_handlers",
           "run_tool", "run_until", "stop_all_children"]

# Variables that would make llama.cpp's converter import a different gguf-py than the one in its own tree.
_ENV_DROPPED = ("NO_LOCAL_GGUF",)
_TAIL_LINES = 3


# A full disk, a full quota, or a file size limit (RLIMIT_FSIZE): the same remedy.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


# What a program prints when a write fails that way: the errno's text, numpy's short write (tofile, which the
# converter's GGUF writer uses, reports only the byte counts), or gguf-py's own check of the free space before it
# writes a tensor.
_DISK_FULL_LINE = re.compile("|".join([*(re.escape(os.strerror(code)) for code in DISK_FULL),
                                       r"\d+ requested and \d+ written", r"Not enough free space to write"]))


class DiskFull(SmolconvError):
    """The disk (or a quota, or a file size limit) ran out while writing: no fault of the input."""

    exit_code = 1


def disk_full(problem: str, folder: Path | None = None) -> DiskFull:
    """The one-line error for a write that ran out of room, naming the folder it was writing to."""
    if folder is None:
        return DiskFull(f"{problem}: the disk is full or a file size limit was reached",
                        "free space on the output disk (or raise the limit), or choose another --out")
    free = shutil.disk_usage(folder).free if folder.is_dir() else None
    left = f", {free / 2**20:.0f} MiB free there now" if free is not None else ""
    return DiskFull(f"{problem}: the disk is full or a file size limit was reached, writing to {folder}{left}",
                    f"free space on the disk that holds {folder} (or raise the limit), or choose another --out")


@dataclass(frozen=True)
class ToolResult:
    args: tuple[str, ...]
    returncode: int
    output: str  # stdout and stderr, interleaved as the program wrote them


def tool_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _ENV_DROPPED}
    if extra:
        env.update(extra)
    return env


def _describe(args: Sequence[str]) -> str:
    return Path(str(args[0])).name if args else "?"


def run_tool(
    args: Sequence[str | os.PathLike],
    *,
    what: str,
    fix: str,
    cwd: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    on_line: Callable[[str], None] | None = None,
    check: bool = True,
    tree: bool = False,
    on_start: Callable[[subprocess.Popen], None] | None = None,
    writes_to: Path | None = None,
) -> ToolResult:
    """Run a program to completion, streaming its output lines to `on_line`.

    `what` names the step for the error message ("building llama.cpp"), `fix` tells the user what to do
    when it fails; `check=False` returns a non-zero exit instead (for tools whose --help exits 1); `tree=True`
    for a program that starts others (cmake, pip), so none of them outlives smolconv killed with SIGKILL.
    Output is kept whole in the result; only the last lines go into an error.
    """
    argv = [str(a) for a in args]
    try:
        proc = _start(
            argv,
            tree=tree,
            cwd=cwd,
            env=tool_env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            bufsize=1,
        )
    except FileNotFoundError:
        raise ToolFailed(f"{what} failed: program {argv[0]} not found", fix) from None
    except PermissionError:
        raise ToolFailed(f"{what} failed: program {argv[0]} is not executable", fix) from None

    if on_start:
        on_start(proc)
    lines: list[str] = []
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    # Reading the output blocks until the program closes it, so the time limit is a timer that kills it.
    timed_out = threading.Event()

    def on_timeout() -> None:
        timed_out.set()
        signal_group(proc, signal.SIGKILL)

    timer = threading.Timer(timeout, on_timeout) if timeout else None
    if timer:
        timer.start()
    try:
        assert proc.stdout is not None
        # Text mode reads "\r" as a line end too, so progress bars (tqdm) arrive as separate lines.
        for line in proc.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            if line.strip():
                tail.append(line.strip())
            if on_line:
                on_line(line)
        proc.wait()
    except BaseException:
        # A stop signal or an error in on_line: never leave the child running behind us.
        _kill(proc)
        raise
    finally:
        if timer:
            timer.cancel()
        _forget(proc)
    if timed_out.is_set():
        raise ToolFailed(f"{what} failed: {_describe(argv)} ran longer than {timeout:.0f} s", fix)

    result = ToolResult(tuple(argv), proc.returncode, "\n".join(lines))
    if check and proc.returncode != 0:
        said = " | ".join(tail) if tail else "no output"
        if any(_DISK_FULL_LINE.search(line) for line in lines[-50:]):
            raise disk_full(f"{what} failed: {_describe(argv)} could not write ({said})", writes_to)
        raise ToolFailed(
            f"{what} failed: {_describe(argv)} exited with {proc.returncode} ({said})",
            fix,
        )
    return result


class Beside:
    """A task on a worker thread while the caller does its own part (`with Beside(task):`), for two tools that
    each leave a core idle. The task is called with an `on_start` to pass to run_tool: when the caller's part
    fails or is stopped (a stop signal reaches the main thread only), the task's tools are killed, and the
    block ends only once the task has. Without a failure of its own, the task's error is raised at the end."""

    def __init__(self, task: Callable[[Callable[[subprocess.Popen], None]], object]) -> None:
        self._task = task
        self._lock = threading.Lock()
        self._started: list[subprocess.Popen] = []
        self._cancelled = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="smolconv-beside", daemon=True)

    def _on_start(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._started.append(proc)
            if self._cancelled:
                signal_group(proc, signal.SIGKILL)

    def _run(self) -> None:
        try:
            self._task(self._on_start)
        except BaseException as exc:  # handed to the caller in __exit__
            self._error = exc

    def __enter__(self) -> Beside:
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            with self._lock:
                self._cancelled = True
                for proc in self._started:
                    signal_group(proc, signal.SIGKILL)
        self._thread.join()
        if exc_type is None and self._error is not None:
            raise self._error
        return False


def run_until(
    args: Sequence[str | os.PathLike],
    *,
    ready: Callable[[str], bool],
    what: str,
    fix: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> ToolResult:
    """Run a long-lived program (llama-server) until one of its lines satisfies `ready`, then stop it.

    For reading what a server reports at start-up (buffer sizes) without serving anything. A program that
    exits before it is ready is a ToolFailed, like any other failure.
    """
    lines: list[str] = []

    class _Ready(Exception):
        pass

    def on_line(line: str) -> None:
        lines.append(line)
        if ready(line):
            raise _Ready

    argv = tuple(str(a) for a in args)
    try:
        run_tool(argv, what=what, fix=fix, env=env, timeout=timeout, on_line=on_line, check=True)
    except _Ready:
        # run_tool has killed the program on the way out.
        return ToolResult(argv, 0, "\n".join(lines))
    raise ToolFailed(f"{what} failed: {_describe(argv)} exited before it was ready", fix)


def command_line(args: Sequence[str | os.PathLike]) -> str:
    """A shell-quoted command a user can copy and run by hand."""
    return shlex.join(str(a) for a in args)


class ServerProcess:
    """A long-running program (llama-server) that we start, watch and stop.

    Its output is read on a thread into a bounded log so the pipe never fills; `lines_since(mark)` lets a
    caller read what the server printed while it answered one request (image encode times).
    """

    def __init__(self, args: Sequence[str | os.PathLike], *, what: str, fix: str,
                 env: Mapping[str, str] | None = None, keep_lines: int = 20000,
                 on_line: Callable[[str], None] | None = None):
        self.args = tuple(str(a) for a in args)
        self.what, self.fix = what, fix
        self._lines: collections.deque[tuple[int, str]] = collections.deque(maxlen=keep_lines)
        self._count = 0
        self._lock = threading.Lock()
        self._on_line = on_line
        try:
            self.process = _start(
                self.args, env=tool_env(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, text=True, errors="replace", bufsize=1,
            )
        except FileNotFoundError:
            raise ToolFailed(f"{what} failed: program {self.args[0]} not found", fix) from None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            line = line.rstrip("\n")
            with self._lock:
                self._count += 1
                self._lines.append((self._count, line))
            if self._on_line:
                self._on_line(line)

    @property
    def mark(self) -> int:
        """A position in the log; pass it to `lines_since` later."""
        with self._lock:
            return self._count

    def lines_since(self, mark: int) -> list[str]:
        with self._lock:
            return [line for n, line in self._lines if n > mark]

    def tail(self, n: int = _TAIL_LINES) -> str:
        lines = [line.strip() for _, line in list(self._lines)[-50:] if line.strip()]
        return " | ".join(lines[-n:]) if lines else "no output"

    def running(self) -> bool:
        return self.process.poll() is None

    def failed(self, why: str) -> ToolFailed:
        return ToolFailed(f"{self.what} failed: {_describe(self.args)} {why} ({self.tail()})", self.fix)

    def wait_ready(self, ready: Callable[[], bool], timeout: float, poll: float = 0.25) -> None:
        """Poll `ready()` until it is true; a server that exits or takes longer than `timeout` is an error."""

        deadline = time.monotonic() + timeout
        while True:
            if not self.running():
                raise self.failed(f"exited with {self.process.returncode} before it was ready")
            if ready():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise self.failed(f"was not ready after {timeout:.0f} s")
            time.sleep(poll)

    def stop(self, grace: float = 10) -> int:
        """Stop the server in order (see `_stop`) and finish reading what it printed."""
        code = _stop(self.process, grace)
        self._reader.join(timeout=5)
        return code

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
