"""selfinstruct.pool.outputs: the one door for output files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from selfinstruct.errors import OutputError
from selfinstruct.pool.outputs import check_output, directory_lock, is_pool_file, open_output, write_text


@pytest.fixture
def pool(tmp_path: Path) -> Path:
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "tasks.jsonl").write_text("{}\n")
    return pool


@pytest.mark.parametrize(
    "name",
    [
        "tasks.jsonl",
        "runs.jsonl",
        "judgements.jsonl",
        "config.json",
        "rejected.jsonl",
        ".lock",
        "tasks.jsonl.corrupt",
    ],
)
def test_pool_files_are_refused_by_name_and_through_links(pool: Path, tmp_path: Path, name: str) -> None:
    assert is_pool_file(pool / name)
    link = tmp_path / "link.jsonl"
    link.symlink_to(pool / name)
    for path in (pool / name, link):
        with pytest.raises(OutputError, match="a file of the pool"):
            check_output(path)


def test_a_pool_file_name_outside_a_pool_is_an_ordinary_file(tmp_path: Path) -> None:
    assert not is_pool_file(tmp_path / "tasks.jsonl")
    assert check_output(tmp_path / "tasks.jsonl").stream is False


def test_inputs_are_refused_by_path_link_and_hard_link(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("x\n")
    (tmp_path / "soft").symlink_to(seeds)
    os.link(seeds, tmp_path / "hard")
    for path in (seeds, tmp_path / "soft", tmp_path / "hard"):
        with pytest.raises(OutputError, match="an input of this command"):
            check_output(path, inputs=[seeds])


def test_the_pool_directory_itself_is_refused(pool: Path) -> None:
    with pytest.raises(OutputError, match="the pool directory itself"):
        check_output(pool, pools=[pool], directory_ok=True)


def test_devices_are_streams_only_when_the_format_streams(tmp_path: Path) -> None:
    assert check_output("/dev/null", stream_ok=True).stream
    with pytest.raises(OutputError, match="is a device, not a regular file, and Parquet cannot be streamed"):
        check_output("/dev/null", fmt="Parquet")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="is a FIFO"):
        check_output(fifo)


def test_a_write_is_whole_or_nothing_and_follows_a_link(tmp_path: Path) -> None:
    real = tmp_path / "real.html"
    real.write_text("old")
    link = tmp_path / "link.html"
    link.symlink_to(real)
    target = check_output(link)
    with pytest.raises(RuntimeError), open_output(target) as fh:
        fh.write("half")
        raise RuntimeError("boom")
    assert real.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["link.html", "real.html"]
    write_text(target, "new")
    assert link.is_symlink() and real.read_text() == "new"
    assert real.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_the_directory_lock_excludes_a_second_holder(tmp_path: Path) -> None:
    with (
        directory_lock(tmp_path),
        pytest.raises(OutputError, match="another export"),
        directory_lock(tmp_path, wait=0.2),
    ):
        pass
    with directory_lock(tmp_path, wait=0.2):
        pass
    assert list(tmp_path.iterdir()) == []  # no lock file left behind


@pytest.mark.parametrize("name", ["/dev/fd/{fd}", "/proc/self/fd/{fd}"])
@pytest.mark.parametrize(("mode", "expected"), [("a", "keep\nnew\n"), ("w", "new\n")])
def test_a_descriptor_of_this_process_is_written_as_the_shell_opened_it(
    tmp_path: Path, name: str, mode: str, expected: str
) -> None:
    """`--out /dev/stdout >> log` appends: the output goes through the descriptor the shell opened (its
    append mode and offset), not through a fresh open() of the file behind it, which would truncate it."""
    log = tmp_path / "log"
    log.write_text("keep\n")
    with open(log, mode) as shell:
        path = Path(name.format(fd=shell.fileno()))
        target = check_output(path, stream_ok=True)
        assert target.stream
        with open_output(target) as fh:
            fh.write("new\n")
        assert not shell.closed  # a duplicate was written and closed, not the shell's own descriptor
    assert log.read_text() == expected
