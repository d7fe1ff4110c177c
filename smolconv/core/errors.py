"""Errors a user can act on.

Every failure that reaches the CLI is a SmolconvError: one line that names the problem and the fix.
The CLI prints it and exits with `exit_code`; nothing else in smolconv prints tracebacks at users.
"""

from __future__ import annotations


class SmolconvError(Exception):
    """A problem the user can fix. `fix` says how, in one short sentence."""

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem.rstrip(".")
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = self.problem
        if self.fix:
            text += f": {self.fix}"
        return " ".join(text.split())  # one line, whatever the inputs held


class ToolFailed(SmolconvError):
    """An external program (llama.cpp tool, pip, cmake, ollama) exited non-zero."""

    exit_code = 1
