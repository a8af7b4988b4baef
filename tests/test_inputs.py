"""selfinstruct.pool.inputs: the bounded reader refuses devices and oversized files with a clear message."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from selfinstruct.errors import InputError
from selfinstruct.pool.inputs import LIMIT_ENV, data_limit, fingerprint, read_bounded


def test_a_regular_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 5000)
    assert read_bounded(path) == b"x" * 5000
    assert len(fingerprint(path)) == 16


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "file not found"),
        (lambda p: p.mkdir(), "is a directory, not a file"),
        (lambda p: p.write_bytes(b"x" * 101), "is 101 bytes, more than the 100 bytes allowed for a test file"),
    ],
)
def test_refusals(tmp_path: Path, make: object, message: str) -> None:
    path = tmp_path / "f"
    make(path)  # type: ignore[operator]
    with pytest.raises(InputError, match=message):
        read_bounded(path, limit=100, what="a test file")


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_a_character_device_is_refused_at_once(device: str) -> None:
    with pytest.raises(InputError, match="is a character device"):
        read_bounded(device)


def test_a_pipe_is_read_up_to_the_limit(tmp_path: Path) -> None:
    fifo = tmp_path / "p"
    os.mkfifo(fifo)

    def feed(data: bytes) -> None:
        with open(fifo, "wb") as fh:
            fh.write(data)

    for data, ok in ((b"y" * 100, True), (b"y" * 101, False)):
        thread = threading.Thread(target=feed, args=(data,), daemon=True)
        thread.start()
        if ok:
            assert read_bounded(fifo, limit=100) == data
        else:
            with pytest.raises(InputError, match="holds more than the 100 bytes"):
                read_bounded(fifo, limit=100)
        thread.join(10)


@pytest.mark.parametrize(("value", "expected"), [("", 2000 * 10**6), ("5", 5 * 10**6), ("0.5", 500_000),
                                                 ("-1", 2000 * 10**6), ("lots", 2000 * 10**6)])  # fmt: skip
def test_the_data_limit_reads_the_environment(monkeypatch: pytest.MonkeyPatch, value: str, expected: int) -> None:
    monkeypatch.setenv(LIMIT_ENV, value)
    assert data_limit() == expected
