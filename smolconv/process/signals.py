"""Stop signals: Ctrl-C, SIGTERM and SIGHUP raise Interrupted on the main thread, once, and are never lost."""

from __future__ import annotations

import _thread
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager

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


@contextmanager
def stop_signals_held():
    """Hold the stop signals while the body runs, then deliver the first one held (it raises as it would have).

    Yields `deliver`, for a body that must deliver before it returns (and then handle what that raises).
    Python handlers can only be swapped on the main thread; elsewhere the signal is not ours to hold.
    """
    held: list[int] = []
    replaced: dict[int, Callable] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            handler = signal.getsignal(signum)
            if callable(handler):  # a Python handler; SIG_DFL and SIG_IGN need no holding
                replaced[signum] = handler
                signal.signal(signum, lambda number, _frame: held.append(number))

    def deliver() -> None:
        while replaced:
            signum, handler = replaced.popitem()
            signal.signal(signum, handler)
        if held:
            signum = held.pop(0)
            held.clear()
            handlers[signum](signum, None)  # raises as the signal would have

    handlers = dict(replaced)
    try:
        yield deliver
    finally:
        deliver()
