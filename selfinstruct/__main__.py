"""The process entry point (``selfinstruct`` and ``python -m selfinstruct``).

Signal handlers go in before the command line and its dependencies are imported, so that SIGINT, SIGTERM
or SIGHUP during start-up is an orderly stop (exit 130, no traceback) rather than Python's default. The
very first ones are installed as this module is imported, with nothing but :mod:`signal`: they only note
the signal, and :func:`main` ends the process quietly if one came. Once the command's outcome is decided,
signals are ignored, so that one arriving while the interpreter shuts down cannot print a traceback.
"""

from __future__ import annotations

import contextlib
import os  # loaded by the interpreter's start-up already: costs nothing
import signal
import sys

from selfinstruct import _EARLY_SIGNALS

# Signals noted since the package's first line (selfinstruct/__init__.py installs the same kind of handler
# first of all; this module's own installation below covers a caller that replaced those).
_early: list[int] = _EARLY_SIGNALS


def _note(signum: int, frame: object) -> None:
    _early.append(signum)


# Only in the process the command runs in: `python -m selfinstruct`, or the `selfinstruct` script importing
# this module. The spawned processes of vLLM import it as __mp_main__ and keep their own signal handling,
# and a program that merely imports it keeps its own.
if __name__ == "__main__" or (
    __name__ == "selfinstruct.__main__" and os.path.basename(sys.argv[0] if sys.argv else "").startswith("selfinstruct")
):
    try:
        for _sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(_sig, _note)
    except ValueError:  # not the main thread (imported by a library caller): nothing to do
        pass


_STOPPED_STARTING = b"selfinstruct: stopped while starting; nothing was written\n"


def _quit_quietly(code: int, message: bytes) -> None:
    with contextlib.suppress(OSError):
        os.write(2, message)
    os._exit(code)


def main() -> None:
    # The command line and its dependencies are imported under the noting handlers: a signal then only
    # appends to ``_early``, so it cannot land inside a dependency's import as an exception (one raised
    # from a class body came back as a RuntimeError from ``__set_name__``, with Python's traceback).
    if _early:
        _quit_quietly(130, _STOPPED_STARTING)
    from selfinstruct import stopping
    from selfinstruct.cli import main as cli_main

    try:
        try:
            stopping.install()  # kept until exit: cli.main() installs its own over these, with no gap
            if _early:  # noted before the handlers that raise took over
                _quit_quietly(130, _STOPPED_STARTING)
            cli_main()
        except BaseException as exc:
            if isinstance(exc, SystemExit) or stopping.stop_in(exc) is None:
                raise
            # A signal in the very last steps (cli.main restoring the handlers it replaced), after the
            # command's own handling: the process still ends as a stopped one, quietly.
            with contextlib.suppress(BaseException):
                sys.stdout.flush()
            _quit_quietly(130, b"selfinstruct: interrupted\n")
    finally:
        for sig in stopping.HANDLED_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)  # the outcome is decided: shutdown must not be interrupted


# The guard matters: vLLM starts its engine in a spawned process, which imports this module again.
if __name__ == "__main__":
    main()
