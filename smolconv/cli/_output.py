"""Where the command line writes: the two consoles, progress, notices and the one-line error.

On a terminal, progress is a transient bar. Elsewhere (CI logs, `make demo > log`) each step prints one line
with its time as it ends, so a long stage is not silent until its table appears.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from smolconv.core.errors import SmolconvError

# Off a terminal rich would wrap at 80 columns; the widest tables fit 100.
console = Console() if sys.stdout.isatty() else Console(width=100)
err_console = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=100)


def print_error(exc: SmolconvError) -> None:
    # escape: a message holding `[onnx]` (an install command) is text, not rich markup.
    err_console.print(f"[bold red]error:[/] {escape(exc.one_line())}", highlight=False, soft_wrap=True)


def print_notices(notices: list[str]) -> None:
    for notice in notices:
        err_console.print(f"[bold yellow]notice:[/] {escape(notice)}", highlight=False, soft_wrap=True)


def print_failed(what: str, failures: list[str]) -> None:
    err_console.print(f"[bold red]{what}[/] {escape('; '.join(failures))}", highlight=False, soft_wrap=True)


def plain(text: str) -> None:
    """A line of results on stdout, never wrapped or highlighted (paths and numbers stay whole)."""
    console.print(text, highlight=False, soft_wrap=True)


class _StepLog:
    """Progress off a terminal: one line per step as it ends, with its time (fractions are not printed).

    On stdout, with the results: stderr keeps to the one-line error when a command fails."""

    def __init__(self) -> None:
        self.stage: str | None = None
        self.started = 0.0

    def __call__(self, stage: str, _fraction: float | None) -> None:
        if stage != self.stage:
            self.close()
            self.stage, self.started = stage, time.monotonic()

    def close(self) -> None:
        if self.stage is not None:
            plain(f"{self.stage}: {time.monotonic() - self.started:.1f} s")
            self.stage = None


@contextmanager
def progress_reporter():
    """A ProgressFn for the stage functions: a bar on a terminal, else a line per finished step."""
    if not err_console.is_terminal:
        log = _StepLog()
        yield log
        log.close()  # not after a failure: the step that failed did not end
        return
    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                   console=err_console, transient=True)
    task = bar.add_task("starting", total=None)

    def progress(stage: str, fraction: float | None) -> None:
        bar.update(task, description=stage, total=None if fraction is None else 1.0, completed=fraction or 0)

    with bar:
        yield progress


@contextmanager
def status(message: str):
    """A spinner on a terminal (updated through the yielded callable); elsewhere nothing until the result."""
    if err_console.is_terminal:
        with err_console.status(message) as spinner:
            yield lambda msg: spinner.update(msg)
    else:
        yield lambda _msg: None


class _EntryLog(_StepLog):
    """Off a terminal, in a batch: a line per finished step, named by its entry."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def close(self) -> None:
        if self.stage is not None:
            plain(f"{self.name}: {self.stage}: {time.monotonic() - self.started:.1f} s")
            self.stage = None


class _BatchLog:
    """batch.run.BatchProgress off a terminal: each entry's steps as they end, then its result."""

    def __init__(self) -> None:
        self.current: _EntryLog | None = None

    def entry(self, name: str) -> _EntryLog:
        self.current = _EntryLog(name)
        return self.current

    def finished(self, result) -> None:
        if self.current is not None:
            self.current.close()
        plain(f"{result.name}: {result.outcome} in {result.seconds:.1f} s")


class _BatchLines:
    """batch.run.BatchProgress on a terminal: one line per entry with its stage (its result once it ended)."""

    def __init__(self, bar: Progress, names: list[str]) -> None:
        self.bar = bar
        self.tasks = {name: bar.add_task(f"{escape(name)}: waiting", total=None, start=False) for name in names}

    def entry(self, name: str):
        task = self.tasks[name]
        self.bar.start_task(task)

        def progress(stage: str, fraction: float | None) -> None:
            self.bar.update(task, description=f"{escape(name)}: {escape(stage)}",
                            total=None if fraction is None else 1.0, completed=fraction or 0)

        return progress

    def finished(self, result) -> None:
        task = self.tasks[result.name]
        self.bar.update(task, description=f"{escape(result.name)}: {result.outcome}", total=1.0, completed=1.0)
        self.bar.stop_task(task)


@contextmanager
def batch_progress(names: list[str]):
    """A batch's progress (batch.run.BatchProgress): on a terminal one line per entry showing its stage, elsewhere a
    line per finished stage, named by its entry."""
    if not err_console.is_terminal:
        yield _BatchLog()
        return
    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                   console=err_console, transient=True)
    with bar:
        yield _BatchLines(bar, names)
