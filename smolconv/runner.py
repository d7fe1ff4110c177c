"""The one place smolconv runs external programs.

llama.cpp's tools, cmake, pip and ollama all go through `run_tool`, which turns a missing program, a
non-zero exit or a timeout into a ToolFailed that names the program and quotes the last lines it printed.
"""

from __future__ import annotations

import _thread
import atexit
import collections
import contextlib
import errno
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from smolconv.errors import SmolconvError, ToolFailed

# Variables that would make llama.cpp's converter import a different gguf-py than the one in its own tree.
_ENV_DROPPED = ("NO_LOCAL_GGUF",)
_TAIL_LINES = 3


# A full disk, a full quota, or a file size limit (RLIMIT_FSIZE): the same remedy.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


# What a program prints when a write fails that way: the errno's text, or numpy's short write (tofile, which the
# converter's GGUF writer uses, reports only the byte counts).
_DISK_FULL_LINE = re.compile("|".join([*(re.escape(os.strerror(code)) for code in DISK_FULL),
                                       r"\d+ requested and \d+ written"]))


def disk_full(problem: str) -> SmolconvError:
    return SmolconvError(f"{problem}: the disk is full or a file size limit was reached",
                         "free space on the output disk (or raise the limit), or choose another --out")


@dataclass(frozen=True)
class ToolResult:
    args: tuple[str, ...]
    returncode: int
    output: str  # stdout and stderr, interleaved as the program wrote them


# Children that are running now. On the way out (normal exit, an error, or a stop signal turned into
# Interrupted) smolconv stops whatever is left, so no llama-server outlives it and holds the GPU.
_running: dict[subprocess.Popen, None] = {}  # in start order
_running_lock = threading.Lock()
# The signals that stop smolconv in order: Ctrl-C, `kill`/CI runners/systemd/container stops, a closed terminal.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(BaseException):
    """A stop signal, raised on the main thread where the signal arrived.

    A BaseException like KeyboardInterrupt, so `except Exception` never swallows it and every `finally`,
    `staged_file` and `ServerProcess` on the way out runs; not a KeyboardInterrupt, so click does not turn it
    into its own "Aborted!" with exit 1 and the CLI can exit with the conventional 128 + signal number.
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_stopping = threading.Event()


def _raise_interrupted(signum: int, _frame) -> None:
    # Only the first signal raises: a second Ctrl-C or SIGTERM while the first one's cleanup runs (removing a
    # partial file, stopping llama-server) must not cut that cleanup short.
    if _stopping.is_set():
        return
    _stopping.set()
    raise Interrupted(signum)


# True while _redeliver_swallowed_stop runs on the main thread: a stop raised inside it would be lost for good.
_in_unraisable_hook = False


def _redeliver_swallowed_stop(unraisable) -> None:
    """sys.unraisablehook: a stop signal that Python swallowed is sent again, once the main thread is out of here.

    A signal can arrive while the main thread runs a weakref callback or a finalizer (importlib's module-lock
    callback during any import, a `__del__`). Python prints the Interrupted raised there as "Exception ignored"
    and goes on, and the command would run to its end and exit 0. So the stop is re-sent from a thread, after
    this hook has returned, and raised wherever the main thread is then; should that again be such a callback,
    this hook runs again. Every other unraisable exception goes to the hook that was there before.
    """
    global _in_unraisable_hook
    if not isinstance(unraisable.exc_value, Interrupted):
        _previous_unraisablehook(unraisable)
        return
    _in_unraisable_hook = True
    threading.Thread(target=_resend_stop, args=(unraisable.exc_value.signum,), daemon=True).start()
    _in_unraisable_hook = False  # the last statement: nothing after it can run a signal handler in this frame


def _resend_stop(signum: int) -> None:
    while _in_unraisable_hook:
        time.sleep(0.001)
    _stopping.clear()  # the first delivery never reached the command, so this one must raise
    _thread.interrupt_main(signum)  # runs _raise_interrupted on the main thread, as the signal itself would


_previous_unraisablehook = sys.unraisablehook


def install_stop_handlers() -> None:
    """Make SIGINT, SIGTERM and SIGHUP raise Interrupted on the main thread (the CLI calls this once)."""
    _stopping.clear()
    for signum in STOP_SIGNALS:
        if signum == signal.SIGINT or signal.getsignal(signum) != signal.SIG_IGN:  # keep `nohup`'s SIGHUP ignore
            signal.signal(signum, _raise_interrupted)
    sys.unraisablehook = _redeliver_swallowed_stop


def stop_all_children() -> None:
    """Stop every child still running, the newest first (a server before what it was started for)."""
    with _running_lock:
        leftovers = list(reversed(_running))
    for proc in leftovers:
        _stop(proc)


def _forget(proc: subprocess.Popen) -> None:
    with _running_lock:
        _running.pop(proc, None)


def _signal_group(proc: subprocess.Popen, signum: int) -> None:
    """Signal the child and whatever it started (cmake's make and compilers): each child leads its own group.

    Only while the child is unreaped, so its id cannot have been reused for another group.
    """
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)


def _kill(proc: subprocess.Popen) -> None:
    _signal_group(proc, signal.SIGKILL)
    proc.wait()


def _stop(proc: subprocess.Popen, grace: float = 10) -> int:
    """SIGTERM (llama-server finishes the request in flight and frees the model), then SIGKILL after `grace`."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _kill(proc)
    _forget(proc)
    return proc.returncode


atexit.register(stop_all_children)


# No orphans, SIGKILL included. Cleanup code cannot run when smolconv is killed with SIGKILL, so each child is
# tied to smolconv by the kernel: it execs through a small launcher that sets PR_SET_PDEATHSIG(SIGKILL) and then
# execs the real program (the setting survives exec), so the child dies when smolconv does, however it dies.
#  - Linux sends the parent-death signal when the *thread* that forked the child exits, not the process. So
#    every child is forked by one spawner thread that lives until the process ends (it only waits on a queue),
#    whichever thread asked for the child; a child started for a worker thread does not die with that worker.
#  - The launcher is a separate exec (`python -I -S -c`, ~20 ms) instead of subprocess's preexec_fn, which is
#    documented unsafe in a process with threads (smolconv always has some: output readers, timers).
#  - If smolconv died between the fork and the prctl, the launcher sees its parent changed and does not exec.
_LAUNCHER = (
    "import ctypes,os,sys\n"
    "if ctypes.CDLL(None,use_errno=True).prctl(1,9,0,0,0)!=0 or os.getppid()!=int(sys.argv[1]):os._exit(126)\n"
    "try:os.execv(sys.argv[2],sys.argv[3:])\n"
    "except OSError as e:sys.stderr.write(f'{sys.argv[2]}: {e.strerror}\\n');os._exit(127)\n"
)
# The parent-death signal reaches only the direct child, and a program that starts a tree of its own (cmake:
# make, the compilers) would leave that tree running. For those the launcher stays as a supervisor: it leads the
# child's process group, forks the program into it and waits; on smolconv's death (its parent-death signal,
# SIGUSR1 here) it SIGKILLs the whole group, itself included. It ignores the ordinary stop signals, since
# runner signals the whole group and the program decides how it ends; then it exits as the program did (the
# same exit code, or the same signal raised on itself, without a core file), so run_tool sees the program's own
# returncode.
# The program gets the default dispositions back before its exec (an ignored signal would stay ignored).
_SUPERVISOR = (
    "import ctypes,os,signal,sys\n"
    "stops=(signal.SIGINT,signal.SIGTERM,signal.SIGHUP)\n"
    "for s in stops:signal.signal(s,signal.SIG_IGN)\n"
    "signal.signal(signal.SIGUSR1,lambda *_:os.killpg(0,signal.SIGKILL))\n"
    "if ctypes.CDLL(None,use_errno=True).prctl(1,signal.SIGUSR1,0,0,0)!=0 or os.getppid()!=int(sys.argv[1]):"
    "os._exit(126)\n"
    "pid=os.fork()\n"
    "if pid==0:\n"
    " for s in (*stops,signal.SIGUSR1):signal.signal(s,signal.SIG_DFL)\n"
    " try:os.execv(sys.argv[2],sys.argv[3:])\n"
    " except OSError as e:sys.stderr.write(f'{sys.argv[2]}: {e.strerror}\\n');os._exit(127)\n"
    "status=os.waitpid(pid,0)[1]\n"
    "if os.WIFSIGNALED(status):\n"
    " import resource;resource.setrlimit(resource.RLIMIT_CORE,(0,0));s=os.WTERMSIG(status)\n"
    " if s!=signal.SIGKILL:signal.signal(s,signal.SIG_DFL)\n"
    " os.kill(os.getpid(),s)\n"
    "os._exit(os.waitstatus_to_exitcode(status))\n"
)
_TIE_TO_PARENT = sys.platform.startswith("linux")


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
    launcher = _SUPERVISOR if tree else _LAUNCHER
    return [sys.executable, "-I", "-S", "-c", launcher, str(os.getpid()), _resolve(argv, popen_args), *argv]


def _start(argv: Sequence[str], *, tree: bool = False, **popen_args) -> subprocess.Popen:
    """subprocess.Popen through the spawner, tied to smolconv's life, with stop signals held until it is recorded.

    An Interrupted raised while the child is being started would lose the caller's handle on it; the child is
    in `_running` either way (stop_all_children stops it), and holding the signals lets the caller's own
    cleanup (run_tool, ServerProcess) see it too. Python handlers can only be swapped on the main thread;
    elsewhere the signal is not ours to hold. `tree`: the program starts processes of its own, so it runs under
    the supervising launcher (see _SUPERVISOR) and the child's pid is the supervisor's, not the program's.
    """
    held: list[int] = []
    replaced = {}
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            handler = signal.getsignal(signum)
            if callable(handler):  # a Python handler; SIG_DFL and SIG_IGN need no holding
                replaced[signum] = handler
                signal.signal(signum, lambda number, _frame: held.append(number))

    def deliver_held() -> None:
        for signum, handler in replaced.items():
            signal.signal(signum, handler)
        if held:
            replaced[held[0]](held[0], None)  # raises as the signal would have

    # Its own process group: a terminal's Ctrl-C reaches smolconv alone, which stops the child (and what the
    # child started) in order, instead of all of them receiving SIGINT at once.
    popen_args["start_new_session"] = True
    try:
        proc = _spawner.popen(_tied(argv, popen_args, tree), popen_args)
    except BaseException:
        deliver_held()  # an interrupt outranks the failure to start
        raise
    try:
        deliver_held()
    except BaseException:
        _kill(proc)
        _forget(proc)
        raise
    return proc


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

    lines: list[str] = []
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    # Reading the output blocks until the program closes it, so the time limit is a timer that kills it.
    timed_out = threading.Event()

    def on_timeout() -> None:
        timed_out.set()
        _signal_group(proc, signal.SIGKILL)

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
            raise disk_full(f"{what} failed: {_describe(argv)} could not write ({said})")
        raise ToolFailed(
            f"{what} failed: {_describe(argv)} exited with {proc.returncode} ({said})",
            fix,
        )
    return result


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
        import time

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
