"""Signals become one orderly stop: SIGINT, SIGTERM and SIGHUP raise :class:`StopRequested` once.

Scope: the process-wide signal handlers of the command line and the few sections of library code that must
not be cut in half by them (a round's append, the run's ledger line). It does not decide what a stop means
for a run: :mod:`selfinstruct.loop.runner` catches :class:`StopRequested` and records it in the ledger.

Why it is built this way:

* ``timeout -s TERM`` sends its signal twice (to the child and to the child's process group), and a person
  may press Ctrl-C again while a run is finishing. Only the *first* signal raises; later ones are counted
  and ignored, so they can never interrupt the cleanup that writes the ledger line.
* :class:`StopRequested` derives from :class:`BaseException`, like :class:`KeyboardInterrupt`, so that an
  ``except Exception`` in a library (a retry loop, an HTTP client) cannot swallow it.
* Code that must finish once started runs inside :func:`deferred`: a signal arriving there is held and
  raised when the section ends. Signals are handled between Python bytecodes of the main thread only, so
  the handler itself never runs in the middle of a system call's bookkeeping.
* A stop, once requested, stays requested: :func:`raise_pending` is a checkpoint that raises whenever a
  signal was received, even if the handler already raised once. The exception the handler raises can be
  lost in code we do not own: a SIGTERM that landed while CPython compiled a module for an import was
  swallowed there and the run went on for ever. The loop's checkpoints then stop it at its next turn. For
  the same reason a second :func:`install` (the CLI's, over the entry point's) keeps what was received.

Typical use (the CLI installs the handlers before it imports anything heavy)::

    restore = install()
    try:
        run()            # raises StopRequested at the first signal
    except StopRequested as stop:
        ...              # stop.reason is "interrupted" (SIGINT) or "terminated" (SIGTERM, SIGHUP)
    finally:
        restore()

Library callers that install nothing still get ``KeyboardInterrupt`` from Python's default SIGINT
handler; :func:`deferred` is then a no-op.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

INTERRUPTED = "interrupted"
TERMINATED = "terminated"

HANDLED_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# A repeat of the first signal later than this is a person insisting, not `timeout`'s duplicate: say that
# the run is finishing (once), instead of staying silent.
_REPEAT_NOTICE_AFTER = 1.0


class StopRequested(BaseException):
    """The process got SIGINT, SIGTERM or SIGHUP: stop in an orderly way. ``reason`` goes in the ledger."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.reason = INTERRUPTED if signum == signal.SIGINT else TERMINATED
        super().__init__(f"stopped by {signal.Signals(signum).name}")


class _State:
    # A plain class, not a dataclass: this module is imported before the handlers are installed, and
    # dataclasses (with inspect and ast behind it) would widen the window in which a signal gives a traceback.
    __slots__ = ("deferring", "first", "first_at", "installed", "noticed", "raised", "repeats")

    def __init__(self, installed: bool = False) -> None:
        self.installed = installed
        self.deferring = 0  # depth of nested deferred() sections
        self.first: int | None = None  # the first signal received
        self.first_at = 0.0
        self.raised = False  # StopRequested was raised for the first signal
        self.repeats = 0
        self.noticed = False


_state = _State()


def _handler(signum: int, frame: FrameType | None) -> None:
    if _state.first is None:
        _state.first, _state.first_at = signum, time.monotonic()
        if not _state.deferring:
            _state.raised = True
            raise StopRequested(signum)
        return
    _state.repeats += 1
    if not _state.noticed and time.monotonic() - _state.first_at > _REPEAT_NOTICE_AFTER:
        _state.noticed = True
        # os.write, not print: safe whatever the main thread was doing with sys.stderr.
        message = (
            f"selfinstruct: already stopping ({signal.Signals(signum).name} again); finishing the ledger line. "
            "SIGKILL stops at once, and the pool survives it.\n"
        )
        with contextlib.suppress(OSError):
            os.write(2, message.encode())


def _quiet_unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    """``sys.unraisablehook`` while the handlers are ours: a :class:`StopRequested` that landed where Python
    cannot raise it (a weakref callback inside an import, a ``__del__``) is not printed as "Exception ignored
    in ...": the stop stays requested and the next checkpoint (:func:`raise_pending`) acts on it. Anything
    else goes to the hook that was there before."""
    if isinstance(unraisable.exc_value, StopRequested):
        return
    _previous_unraisable_hook(unraisable)


_previous_unraisable_hook = sys.unraisablehook


def stop_in(exc: BaseException) -> StopRequested | KeyboardInterrupt | None:
    """The stop behind ``exc``: ``exc`` itself, or one in its chain of causes and contexts. A signal that
    landed inside code we do not own can come back wrapped (Python turns an exception raised while a class
    body is set up into a ``RuntimeError`` whose cause is the original); it is still a stop, not a failure."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, (StopRequested, KeyboardInterrupt)):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def reason_of(stop: StopRequested | KeyboardInterrupt) -> str:
    """The ledger's reason for a stop: ``"interrupted"`` or ``"terminated"``."""
    return stop.reason if isinstance(stop, StopRequested) else INTERRUPTED


def install() -> Callable[[], None]:
    """Install the handlers (main thread only; elsewhere a no-op). Returns a function that restores them.

    Installing over handlers that are already ours keeps any signal they received."""
    global _previous_unraisable_hook
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    if sys.unraisablehook is not _quiet_unraisable:
        _previous_unraisable_hook = sys.unraisablehook
        sys.unraisablehook = _quiet_unraisable
    if not _state.installed:
        reset()
    previous = {}
    for sig in HANDLED_SIGNALS:
        previous[sig] = signal.signal(sig, _handler)
    _state.installed = True

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _state.installed = False

    return restore


def reset() -> None:
    """Forget any signal received (a new run in the same process, tests)."""
    global _state
    _state = _State(installed=_state.installed)


def received() -> int | None:
    """The first signal received since :func:`install`/:func:`reset`, or ``None``."""
    return _state.first


def stop_reason() -> str | None:
    """``"interrupted"`` or ``"terminated"`` once a signal was received, else ``None``."""
    if _state.first is None:
        return None
    return INTERRUPTED if _state.first == signal.SIGINT else TERMINATED


@contextmanager
def deferred() -> Iterator[None]:
    """Hold signals for the duration of the block; one that arrived is raised when the block ends.

    Nothing is raised on leaving when the block itself raised (its exception wins), or when the stop was
    already raised once (the run is stopping: the caller is cleaning up).
    """
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1
    if not _state.deferring and _state.first is not None and not _state.raised:
        _state.raised = True
        raise StopRequested(_state.first)


@contextmanager
def held() -> Iterator[None]:
    """Hold signals for the block and leave one that arrived pending for :func:`raise_pending`.

    For a write whose bookkeeping continues after the block (a round appended to the pool, then counted
    in memory): the stop takes effect at the next :func:`raise_pending`, at a point where the state is whole.
    """
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1


def raise_pending() -> None:
    """A checkpoint: raise :class:`StopRequested` now if a signal was received (held meanwhile, or raised
    before and lost on the way), unless signals are held here. Call it only where work would go on."""
    if not _state.deferring and _state.first is not None:
        _state.raised = True
        raise StopRequested(_state.first)


@contextmanager
def shielded() -> Iterator[None]:
    """Hold signals for the block and never raise for them afterwards: cleanup after a stop (the ledger).

    A signal that arrives here is still recorded (:func:`received`), so the caller can report it.
    """
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1
        if _state.first is not None:
            _state.raised = True


__all__ = [
    "HANDLED_SIGNALS",
    "INTERRUPTED",
    "TERMINATED",
    "StopRequested",
    "deferred",
    "held",
    "install",
    "raise_pending",
    "received",
    "reset",
    "shielded",
    "stop_reason",
]
