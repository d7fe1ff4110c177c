"""Run as `python -I -S supervisor.py PARENT_PID PROGRAM ARGV...`: the launcher for a program that starts a tree.

The parent-death signal reaches only the direct child, so a program that starts processes of its own (cmake:
make, the compilers) would leave them running. This supervisor leads the child's process group, forks PROGRAM
into it and waits; on the parent's death (its parent-death signal, SIGUSR1 here) it SIGKILLs the whole group,
itself included. It ignores the ordinary stop signals, since smolconv signals the whole group and the program
decides how it ends; then it exits as the program did (the same exit code, or the same signal raised on itself,
without a core file), so the caller sees the program's own returncode. The program gets the default signal
dispositions back before its exec (an ignored signal would stay ignored).
"""

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

for stop in STOPS:
    signal.signal(stop, signal.SIG_IGN)
signal.signal(signal.SIGUSR1, lambda *_: os.killpg(0, signal.SIGKILL))
if (ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGUSR1, 0, 0, 0) != 0
        or os.getppid() != int(sys.argv[1])):
    os._exit(126)
pid = os.fork()
if pid == 0:
    for stop in (*STOPS, signal.SIGUSR1):
        signal.signal(stop, signal.SIG_DFL)
    try:
        os.execv(sys.argv[2], sys.argv[3:])
    except OSError as exc:
        sys.stderr.write(f"{sys.argv[2]}: {exc.strerror}\n")
        os._exit(127)
status = os.waitpid(pid, 0)[1]
if os.WIFSIGNALED(status):
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    number = os.WTERMSIG(status)
    if number != signal.SIGKILL:
        signal.signal(number, signal.SIG_DFL)
    os.kill(os.getpid(), number)
os._exit(os.waitstatus_to_exitcode(status))
