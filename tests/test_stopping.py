"""selfinstruct.stopping: signals become one orderly stop, and a stop once requested is never lost."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator

import pytest

from selfinstruct import stopping


@pytest.fixture
def handlers() -> Iterator[None]:
    stopping.reset()
    restore = stopping.install()
    try:
        yield
    finally:
        restore()
        stopping.reset()


def deliver(sig: int) -> None:
    """Send ``sig`` to this process and give the interpreter a few bytecodes to run its handler."""
    os.kill(os.getpid(), sig)
    for _ in range(100):
        time.sleep(0.001)


@pytest.mark.parametrize(("sig", "reason"), [(signal.SIGINT, "interrupted"), (signal.SIGTERM, "terminated"),
                                             (signal.SIGHUP, "terminated")])  # fmt: skip
def test_the_first_signal_raises_with_its_reason(handlers: None, sig: int, reason: str) -> None:
    with pytest.raises(stopping.StopRequested) as info:
        deliver(sig)
    assert info.value.reason == reason and stopping.stop_reason() == reason and stopping.received() == sig


def test_a_repeat_is_counted_not_raised(handlers: None) -> None:
    with pytest.raises(stopping.StopRequested):
        deliver(signal.SIGTERM)
    deliver(signal.SIGTERM)  # `timeout -s TERM` sends two: the second must not cut the cleanup short
    assert stopping.received() == signal.SIGTERM


def test_a_signal_in_a_held_section_waits_for_the_checkpoint(handlers: None) -> None:
    with stopping.held():
        deliver(signal.SIGTERM)  # nothing raised here: the section finishes
        stopping.raise_pending()  # still held: a checkpoint inside does nothing
    with pytest.raises(stopping.StopRequested):
        stopping.raise_pending()


def test_a_stop_lost_in_code_we_do_not_own_is_raised_again_at_the_next_checkpoint(handlers: None) -> None:
    # CPython swallowed the handler's exception once while compiling a module for an import; any library
    # with a bare `except BaseException: pass` would do the same. The stop must survive that.
    with contextlib.suppress(stopping.StopRequested):  # swallowed
        deliver(signal.SIGTERM)
    with pytest.raises(stopping.StopRequested) as info:
        stopping.raise_pending()
    assert info.value.reason == "terminated"
    with pytest.raises(stopping.StopRequested):
        stopping.raise_pending()  # and at every checkpoint after: nothing goes on once a stop was asked


def test_installing_again_over_our_own_handlers_keeps_what_was_received(handlers: None) -> None:
    # The entry point installs the handlers before importing the CLI, which installs its own over them.
    with contextlib.suppress(stopping.StopRequested):
        deliver(signal.SIGINT)
    restore = stopping.install()
    try:
        assert stopping.received() == signal.SIGINT
        with pytest.raises(stopping.StopRequested):
            stopping.raise_pending()
    finally:
        restore()


def test_shielded_cleanup_is_never_cut_short(handlers: None) -> None:
    with stopping.shielded():
        deliver(signal.SIGTERM)
        deliver(signal.SIGINT)
    assert stopping.received() == signal.SIGTERM


def test_deferred_raises_when_the_section_ends(handlers: None) -> None:
    done = []
    with pytest.raises(stopping.StopRequested), stopping.deferred():
        deliver(signal.SIGHUP)
        done.append(True)
    assert done == [True]


def test_without_handlers_nothing_is_pending() -> None:
    stopping.reset()
    stopping.raise_pending()  # no signal, no stop
    assert stopping.received() is None and stopping.stop_reason() is None


class _Raises:
    """An object whose finalizer raises ``error``: Python cannot raise it there and reports it as unraisable."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __del__(self) -> None:
        raise self.error


@pytest.mark.parametrize(
    ("error", "passed_on"),
    [(stopping.StopRequested(signal.SIGINT), False), (ValueError("a real bug"), True)],
)
def test_a_stop_that_lands_where_python_cannot_raise_it_is_not_reported(
    handlers: None, monkeypatch: pytest.MonkeyPatch, error: BaseException, passed_on: bool
) -> None:
    """A signal inside a weakref callback of an import or a finalizer: no "Exception ignored" traceback for a
    stop (the next checkpoint acts on it); any other unraisable error goes on to the hook that was there."""
    seen: list[BaseException | None] = []
    monkeypatch.setattr(stopping, "_previous_unraisable_hook", lambda u: seen.append(u.exc_value))
    assert sys.unraisablehook is stopping._quiet_unraisable
    holder = _Raises(error)
    del holder
    assert seen == ([error] if passed_on else [])


class _RaisesOnSetName:
    """A descriptor whose ``__set_name__`` raises: Python wraps that in a RuntimeError, as it did with a stop
    that landed while ``platform`` (imported by typer) built a class."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __set_name__(self, owner: type, name: str) -> None:
        raise self.exc


def _wrapped_by_set_name(exc: BaseException) -> BaseException:
    try:
        type("Built", (), {"field": _RaisesOnSetName(exc)})
    except BaseException as wrapped:  # what Python made of it is the point
        return wrapped
    raise AssertionError("type() did not raise")


def _chained(outer: Exception, inner: BaseException, *, cause: bool) -> BaseException:
    if cause:
        outer.__cause__ = inner
    else:
        outer.__context__ = inner
    return outer


STOP = stopping.StopRequested(signal.SIGTERM)


@pytest.mark.parametrize(
    ("exc", "found"),
    [
        (STOP, STOP),
        (KeyboardInterrupt(), "KeyboardInterrupt"),
        (_chained(RuntimeError("wrapped"), STOP, cause=True), STOP),
        (_chained(ValueError("while handling"), STOP, cause=False), STOP),
        (_chained(ValueError("outer"), _chained(OSError("middle"), STOP, cause=True), cause=False), STOP),
        (ValueError("a real failure"), None),
        (_chained(ValueError("a real failure"), OSError("its cause"), cause=True), None),
    ],
    ids=["itself", "keyboard-interrupt", "cause", "context", "two-deep", "unrelated", "unrelated-chain"],
)
def test_stop_in_finds_a_stop_anywhere_in_the_chain(exc: BaseException, found: object) -> None:
    result = stopping.stop_in(exc)
    if found == "KeyboardInterrupt":
        assert isinstance(result, KeyboardInterrupt)
    else:
        assert result is found


def test_stop_in_ends_on_a_cycle() -> None:
    first, second = ValueError("a"), ValueError("b")
    first.__context__, second.__context__ = second, first
    assert stopping.stop_in(first) is None


def test_a_stop_raised_while_python_builds_a_class_is_still_a_stop() -> None:
    wrapped = _wrapped_by_set_name(STOP)
    assert isinstance(wrapped, RuntimeError)  # what Python does; the stop is only in the chain
    assert stopping.stop_in(wrapped) is STOP
