"""How stages report progress: a callable taking a stage description and a fraction done (or None).

Stages never draw anything themselves; the CLI passes a callable that feeds a rich progress bar.
"""

from __future__ import annotations

from collections.abc import Callable

ProgressFn = Callable[[str, float | None], None]


def no_progress(_stage: str, _fraction: float | None) -> None:
    """The default for callers from Python that want no progress output."""
