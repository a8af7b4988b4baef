"""Build hook: ship the start-up ``.pth`` file that holds back SIGINT until selfinstruct can take it.

A Ctrl-C in the first tenth of a second of ``selfinstruct ...`` used to land while Python itself was still
starting (``site`` reading the environment's ``.pth`` files, or the console script's own first import),
before any line of the package could install a handler: Python printed its traceback. A ``.pth`` file runs
its ``import`` lines during ``site``, and site-packages' ``.pth`` files run in name order, so this one,
named to sort first, blocks SIGINT in the command line's own process only (the ``selfinstruct`` script or
``python -m selfinstruct``: nothing else in the environment is touched). The signal then waits in the
kernel; ``selfinstruct/__init__.py`` installs its handlers and unblocks it, and a pending one is delivered to
them (the command ends quietly with exit 130).

Configured in pyproject.toml (``[tool.setuptools] cmdclass``): a wheel carries the file at its root, which
installers put in site-packages; an editable install (``pip install -e``) writes it next to setuptools' own
``__editable__`` file. ``tests/test_packaging.py`` builds both and checks.
"""

from __future__ import annotations

import os

from setuptools.command.build_py import build_py

PTH_NAME = "00-selfinstruct-startup.pth"

# Lines of a .pth file that start with "import" are executed by site (one line each); "#" lines are comments.
# ``_signal`` is the C module under ``signal`` (importing ``signal`` would import enum: milliseconds).
# ``pthread_sigmask`` is missing on Windows, where the line does nothing. ``setdefault``: site may read the
# same directory twice (a venv's lib64 is a link to lib), and the second reading must not forget that the
# first blocked SIGINT.
PTH_TEXT = (
    "# selfinstruct: in the `selfinstruct` command's own process only, hold SIGINT back while Python starts;\n"
    "# selfinstruct/__init__.py takes it over and lets a pending one through (see tools/build_hooks.py).\n"
    # One line: site executes each line on its own.
    'import sys, _signal; hasattr(_signal, "pthread_sigmask")'
    ' and ((sys.argv[0].replace("\\\\", "/").rpartition("/")[2] == "selfinstruct" if sys.argv else False)'
    ' or list(getattr(sys, "orig_argv", [])[1:3]) == ["-m", "selfinstruct"])'
    ' and sys.__dict__.setdefault("_selfinstruct_sigint_held",'
    " _signal.SIGINT not in _signal.pthread_sigmask(_signal.SIG_BLOCK, {_signal.SIGINT}))\n"
)


class BuildPy(build_py):
    """``build_py`` that also writes :data:`PTH_NAME` where it lands in site-packages."""

    def run(self) -> None:
        super().run()
        # In an editable build, setuptools' editable_wheel points ``install_lib`` at the root of the wheel it
        # is assembling: files under ``build_lib`` do not reach an editable wheel.
        target = self.get_finalized_command("install").install_lib if self.editable_mode else self.build_lib
        os.makedirs(target, exist_ok=True)
        path = os.path.join(target, PTH_NAME)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(PTH_TEXT)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), os.path.join(self.build_lib, PTH_NAME)]
