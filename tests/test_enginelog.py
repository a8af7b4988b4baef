"""The engine's own output kept off the terminal: file descriptors 1 and 2 into a log, and its summary line.

The redirection is checked in a child Python (so pytest's own capture is not in the way) that writes the
ways vLLM does: Python's stdout and stderr, a ``logging`` handler, a warning, and a grandchild process
that inherited the descriptors.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from selfinstruct.engines import enginelog

CHILD = textwrap.dedent(
    """
    import logging, subprocess, sys, warnings
    from pathlib import Path
    from selfinstruct.engines import enginelog

    log = Path(sys.argv[1])
    with enginelog.redirected(log) as terminal:
        print("INFO from the engine on stdout")
        print("WARNING 12-04 22:10:01 [config.py:1] casting 7 tensors", file=sys.stderr)
        logging.basicConfig(stream=sys.stderr)
        logging.getLogger("vllm").warning("WARNING 12-04 22:10:02 [config.py:1] casting 9 tensors")
        warnings.warn("a library complains")
        subprocess.run([sys.executable, "-c", "import sys; print('from the engine process', file=sys.stderr)"])
        terminal.stderr.write("our own line\\n")
        terminal.stdout.write("our stdout line\\n")
    print("after the block, on the terminal again")
    """
)


def test_redirected_sends_everything_to_the_log_and_keeps_our_lines(tmp_path: Path) -> None:
    log = tmp_path / "pool" / "engine.log"
    done = subprocess.run([sys.executable, "-c", CHILD, str(log)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "our own line\n"
    assert done.stdout == "our stdout line\nafter the block, on the terminal again\n"
    text = log.read_text()
    for expected in ("INFO from the engine", "casting 7 tensors", "casting 9 tensors", "a library complains",
                     "from the engine process"):  # fmt: skip
        assert expected in text
    summary = enginelog.summarize(log)
    assert summary.warnings == 3 and summary.top == "casting N tensors" and summary.top_count == 2


def test_redirected_restores_the_descriptors_after_an_exception(tmp_path: Path) -> None:
    script = CHILD.replace('terminal.stdout.write("our stdout line\\n")', 'raise SystemExit("failed inside")')
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "e.log")], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 1 and "failed inside" in done.stderr  # the exit message reached the terminal


@pytest.mark.parametrize(
    ("text", "lines", "warnings", "errors", "top"),
    [
        ("", 0, 0, 0, None),
        ("INFO a\nINFO b\n", 2, 0, 0, None),
        ("(EngineCore pid=9) WARNING 12-04 22:10:01 [cpu.py:2] no triton\n", 1, 1, 0, "no triton"),
        ("x.py:3: UserWarning: 12 dtype casts\ny.py:4: UserWarning: 13 dtype casts\n", 2, 2, 0, "N dtype casts"),
        ("ERROR 12-04 22:10:01 [core.py:1] engine died\n", 1, 0, 1, None),
        ("\xff\xfe broken bytes\n", 1, 0, 0, None),
    ],
)
def test_summarize(tmp_path: Path, text: str, lines: int, warnings: int, errors: int, top: str | None) -> None:
    path = tmp_path / "engine.log"
    path.write_bytes(text.encode("latin-1"))
    summary = enginelog.summarize(path)
    assert (summary.lines, summary.warnings, summary.errors, summary.top) == (lines, warnings, errors, top)
    assert str(path) in summary.describe(path)


def test_summarize_reads_from_an_offset_and_survives_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "engine.log"
    path.write_text("WARNING 1 [a.py:1] old run\n")
    offset = enginelog.size(path)
    with path.open("a") as handle:
        handle.write("WARNING 2 [a.py:1] this run\n")
    assert enginelog.summarize(path, offset).top == "this run"
    assert enginelog.summarize(tmp_path / "none.log").lines == 0 and enginelog.size(tmp_path / "none.log") == 0


def test_describe_is_one_line(tmp_path: Path) -> None:
    line = enginelog.LogSummary(200, 152, 1, "cast to float32", 146).describe(tmp_path / "engine.log")
    assert "\n" not in line
    assert line.startswith("engine log: 200 lines, 152 warnings (146× 'cast to float32'), 1 error line, in ")


def test_the_last_exception_is_named(tmp_path: Path) -> None:
    path = tmp_path / "engine.log"
    path.write_text(
        'Traceback (most recent call last):\n  File "x.py", line 1\n'
        "RuntimeError: operator torchvision::nms does not exist\n"
        "ERROR 12-04 22:28:20 [core.py:1] EngineCore failed to start.\n"
        "x.py:2: UserWarning: not this one\n"
    )
    summary = enginelog.summarize(path)
    assert summary.last_exception == "RuntimeError: operator torchvision::nms does not exist"
    assert summary.describe(path).endswith(
        "; its last exception: RuntimeError: operator torchvision::nms does not exist"
    )


GENERATE = textwrap.dedent(
    """
    import subprocess, sys
    sys.path.insert(0, sys.argv[1])
    from test_backends_vllm import Recorder, make_fake_vllm

    fake = make_fake_vllm(Recorder())
    build = fake.LLM.__init__

    def noisy(self, **kwargs):  # what vLLM does while it starts: its log, library warnings, engine processes
        print("INFO 12-04 22:10:00 [llm.py:1] starting the engine")
        print("WARNING 12-04 22:10:01 [config.py:1] casting 7 tensors", file=sys.stderr)
        subprocess.run([sys.executable, "-c", "import sys; print('from the engine process', file=sys.stderr)"])
        build(self, **kwargs)

    fake.LLM.__init__ = noisy
    sys.modules["vllm"] = fake
    from selfinstruct.cli import main

    sys.argv = ["selfinstruct", "generate", "--model", "org/tiny", *sys.argv[2:]]
    main()
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("verbose", [False, True])
def test_generate_keeps_the_engines_output_off_the_terminal(tmp_path: Path, verbose: bool) -> None:
    from seedsets import write_seeds

    tests = Path(__file__).resolve().parent
    seeds = write_seeds(tmp_path / "seeds.jsonl")
    out = tmp_path / "pool"
    args = ["--out", str(out), "--seeds", str(seeds), "--max-rounds", "1", "--batch-size", "2", "--seed", "1"]
    args += ["--verbose"] if verbose else []
    done = subprocess.run([sys.executable, "-c", GENERATE, str(tests), *args], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 0, done.stderr
    terminal = done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert "selfinstruct generate: max_rounds;" in lines[-1]
    if verbose:
        assert "casting 7 tensors" in terminal and "from the engine process" in terminal
        assert not (out / "engine.log").exists()
        return
    assert "casting 7" not in terminal and "from the engine process" not in terminal and "starting the" not in terminal
    log = (out / "engine.log").read_text()
    assert "casting 7 tensors" in log and "from the engine process" in log and "starting the engine" in log
    assert "engine log: 4 lines, 1 warning ('casting N tensors'), in " in lines[-2]  # the header line counts too
