from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from smolconv.errors import ToolFailed
from smolconv.runner import run_tool
from tests.conftest import pid_is_running


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
        from smolconv.runner import ServerProcess
        server = ServerProcess([sys.executable, "-c", "import time; time.sleep(600)"], what="a test server", fix="")
        print(server.process.pid, flush=True)
        raise KeyboardInterrupt  # as Ctrl-C would, without anyone calling server.stop()
    """)
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "KeyboardInterrupt" in result.stderr
    child = int(result.stdout.split()[0])
    assert not pid_is_running(child), "the child outlived the Python process that started it"
