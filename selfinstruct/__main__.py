"""The process entry point (``selfinstruct`` and ``python -m selfinstruct``).

Signal handlers go in before the command line and its dependencies are imported, so that SIGINT, SIGTERM
or SIGHUP during start-up is an orderly stop (exit 130, no traceback) rather than Python's default.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    from selfinstruct import stopping

    stopping.install()  # kept until exit: cli.main() installs its own over these, with no gap
    try:
        from selfinstruct.cli import main as cli_main
    except (stopping.StopRequested, KeyboardInterrupt):
        os.write(2, b"selfinstruct: stopped while starting; nothing was written\n")
        sys.exit(130)
    cli_main()


# The guard matters: vLLM starts its engine in a spawned process, which imports this module again.
if __name__ == "__main__":
    main()
