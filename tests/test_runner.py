from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from smolconv.core.errors import ToolFailed
from smolconv.process.runner import Beside, run_tool
from tests.helpers import pid_is_running


def test_output_is_streamed_and_kept():
    seen: list[str] = []
    result = run_tool([sys.executable, "-c", "print('a'); print('b')"], what="printing", fix="none",
                      on_line=seen.append)
    assert seen == ["a", "b"]
    assert result.output == "a\nb"


def test_failure_names_the_step_and_quotes_the_last_lines():
    code = "import sys; print('line 1'); print('line 2'); print('it broke', file=sys.stderr); sys.exit(3)"
    with pytest.raises(ToolFailed) as info:
        run_tool([sys.executable, "-c", code], what="converting x", fix="do y")
    message = info.value.one_line()
    assert message.startswith("converting x failed:")
    assert "exited with 3" in message and "it broke" in message and message.endswith(": do y")
    assert "\n" not in message


def test_missing_program():
    with pytest.raises(ToolFailed, match="program /no/such/tool not found"):
        run_tool(["/no/such/tool"], what="running it", fix="install it")


def test_timeout_kills_the_program():
    with pytest.raises(ToolFailed, match="ran longer than 1 s"):
        run_tool([sys.executable, "-c", "import time; time.sleep(30)"], what="waiting", fix="-", timeout=1)


def test_converter_never_sees_no_local_gguf(monkeypatch):
    # The converter must import the gguf-py of its own tree; NO_LOCAL_GGUF would switch that off.
    monkeypatch.setenv("NO_LOCAL_GGUF", "1")
    result = run_tool([sys.executable, "-c", "import os; print(os.environ.get('NO_LOCAL_GGUF'))"],
                      what="env", fix="-")
    assert result.output == "None"


def test_a_server_left_running_is_stopped_when_smolconv_exits():
    """An error (or Ctrl-C) that skips the caller's own stop must not leave a server holding the GPU."""
    program = textwrap.dedent("""
        import sys
        from smolconv.process.runner import ServerProcess
        server = ServerProcess([sys.executable, "-c", "import time; time.sleep(600)"], what="a test server", fix="")
        print(server.process.pid, flush=True)
        raise KeyboardInterrupt  # as Ctrl-C would, without anyone calling server.stop()
    """)
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "KeyboardInterrupt" in result.stderr
    child = int(result.stdout.split()[0])
    assert not pid_is_running(child), "the child outlived the Python process that started it"


def test_a_stop_signal_that_python_swallows_is_raised_again():
    """A signal during a weakref callback (importlib's, on any import) must still stop the command.

    Python prints an exception raised in such a callback as "Exception ignored" and goes on: CI once saw a smoke
    run to its end and exit 0 after SIGHUP. Here the signal is raised inside a callback on purpose.
    """
    program = textwrap.dedent("""
        import signal, time, weakref
        from smolconv.process.runner import Interrupted, install_stop_handlers
        install_stop_handlers()
        class Thing: pass
        thing = Thing()
        ref = weakref.ref(thing, lambda _: signal.raise_signal(signal.SIGTERM))
        try:
            del thing  # the callback runs here, and the handler inside it
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                time.sleep(0.01)
            print("ran on")
        except Interrupted as stop:
            print("stopped by", stop.name)
    """)
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert (result.stdout.strip(), result.stderr) == ("stopped by SIGTERM", "")


@pytest.mark.parametrize("script, returncode", [("exit 3", 3), ("kill -TERM $$", -15), ("kill -KILL $$", -9)],
                         ids=["exit", "SIGTERM", "SIGKILL"])
def test_a_tree_reports_the_programs_own_status(script, returncode):
    """Under the supervising launcher (tree=True) the program's exit code or signal is what run_tool sees."""
    result = run_tool(["sh", "-c", f"echo started; {script}"], what="a tree", fix="-", check=False, tree=True)
    assert (result.returncode, result.output) == (returncode, "started")


def test_timeout_kills_a_whole_tree():
    """A timed-out program's own children go too: the whole group is killed, supervisor included."""
    lines: list[str] = []
    with pytest.raises(ToolFailed, match="ran longer than 1 s"):
        run_tool(["sh", "-c", "sleep 60 & echo $!; wait"], what="waiting", fix="-", timeout=1, tree=True,
                 on_line=lines.append)
    deadline = time.monotonic() + 5  # SIGKILL is sent, not waited for: the orphaned sleep dies a moment later
    while pid_is_running(int(lines[0])) and time.monotonic() < deadline:  # sh's own child, sleep
        time.sleep(0.05)
    assert not pid_is_running(int(lines[0]))


def test_a_tool_beside_a_part_that_fails_is_killed_and_waited_for():
    started = []

    def task(on_start):
        run_tool(["sleep", "60"], what="sleeping", fix="none",
                 on_start=lambda proc: started.append(proc) or on_start(proc))

    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="the caller's part"), Beside(task):
        while not started:
            time.sleep(0.01)
        raise RuntimeError("the caller's part failed")
    assert time.monotonic() - t0 < 10 and started[0].returncode is not None  # killed, reaped, not 60 s
    assert not pid_is_running(started[0].pid)


def test_a_failure_beside_a_part_that_succeeds_is_raised_after_it():
    def task(on_start):
        run_tool([sys.executable, "-c", "import sys; sys.exit(4)"], what="the other part", fix="none",
                 on_start=on_start)

    done = []
    with pytest.raises(ToolFailed, match="the other part failed"), Beside(task):
        done.append(run_tool([sys.executable, "-c", "print('mine')"], what="mine", fix="none").output)
    assert done == ["mine"]
