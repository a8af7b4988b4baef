"""A hostile user against every command: bad files, bad options, foreign writers, deleted locks, credentials
in URLs, full and read-only filesystems, and signals at any moment (those as real processes, marked slow).

Each case asserts the exit code, the message, and that the pool is byte-identical or valid and complete.
The bad files are generated into ``tmp_path`` by :func:`bad_files`; nothing is downloaded.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from exportsets import write_pool
from fakelm import FakeLM
from paperlm import PaperLM
from seedsets import MINI_SEEDS, write_seeds
from typer.testing import CliRunner

from selfinstruct.cli import app
from selfinstruct.config import GenerateConfig
from selfinstruct.engines import Completion, Sampling
from selfinstruct.errors import PoolError, PoolLockedError
from selfinstruct.loop.runner import run_generate
from selfinstruct.pool.directory import Pool
from selfinstruct.pool.task import task_from_record

PROMPTS = Path(__file__).resolve().parents[1] / "prompts"
DEAD_URL = "http://127.0.0.1:9/v1"  # the discard port: nothing listens there


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def gen_args(base_url: str, seeds: Path, out: Path, *extra: str) -> list[str]:
    return [
        "generate", "--base-url", base_url, "--seeds", str(seeds), "--out", str(out), "--prompts", str(PROMPTS),
        "--batch-size", "2", "--max-retries", "0", *extra,
    ]  # fmt: skip


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` with its bytes: equal snapshots mean nothing was touched."""
    if not directory.exists():
        return {}
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def check_valid_pool(out: Path) -> list[dict[str, Any]]:
    """tasks.jsonl is whole lines of valid JSON, without a duplicate id or instruction."""
    raw = (out / "tasks.jsonl").read_bytes() if (out / "tasks.jsonl").exists() else b""
    assert not raw or raw.endswith(b"\n")
    tasks = [json.loads(line) for line in raw.decode("utf-8").split("\n") if line]
    assert len({t["id"] for t in tasks}) == len(tasks)
    assert len({" ".join(t["instruction"].casefold().split()) for t in tasks}) == len(tasks)
    return tasks


def task_line(i: int, model: str = "fake-model") -> str:
    return json.dumps(
        {
            "id": f"machine_task_{i:06d}",
            "name": f"t{i}",
            "instruction": f"Describe item number {i} of the shop list.",
            "instances": [{"input": "", "output": f"Item {i}."}],
            "is_classification": False,
            "source": "machine",
            "model": model,
        }
    )


@pytest.fixture
def seeds(tmp_path: Path) -> Path:
    return write_seeds(tmp_path / "seeds.jsonl")


@pytest.fixture
def paper_lm() -> Iterator[FakeLM]:
    with FakeLM(respond=PaperLM()) as lm:
        yield lm


# -- a directory of bad input files ------------------------------------------------------------------------

GOOD = json.dumps(MINI_SEEDS[0])


def bad_files(root: Path) -> dict[str, tuple[Path, str]]:
    """Each bad file with the message (after ``path``) that every reader must give for it."""
    root.mkdir(exist_ok=True)
    deep = '{"a": ' * 100_000 + "1" + "}" * 100_000
    nan = GOOD.replace('"is_classification": false', '"x": NaN, "is_classification": false')
    cases: dict[str, tuple[bytes | None, str]] = {
        "huge_int": (f'{GOOD}\n{{"instruction": "x", "n": 1{"0" * 5000}}}\n'.encode(), ":2: not accepted: a number"),
        "deep_nesting": (f"{GOOD}\n{deep}\n".encode(), ":2: not accepted: nested more than 64 levels deep"),
        "deep_array": (b"[" * 100_000 + b"]" * 100_000, ": not accepted: nested more than 64 levels deep"),
        "lone_surrogate": (
            (GOOD + "\n" + GOOD.replace("How long", "\\ud800 How long") + "\n").encode(),
            ":2: field 'instruction' holds a lone surrogate (\\ud800)",
        ),
        "surrogate_in_output": (
            (GOOD.replace('"output": "About', '"output": "\\udfff About') + "\n").encode(),
            ":1: field 'instances[0].output' holds a lone surrogate (\\udfff)",
        ),
        "not_utf8": (GOOD.encode() + b"\n" + b'{"instruction": "caf\xe9"}\n', ": not UTF-8 text"),
        "nan": (f"{GOOD}\n{nan}\n".encode(), ":2: NaN is not a JSON number"),
        "not_json": ((GOOD + "\n{oops\n").encode(), ":2: not valid JSON"),
        "directory": (None, ": is a directory, not a file"),
    }
    files = {}
    for name, (data, message) in cases.items():
        path = root / (name if data is None else f"{name}.jsonl")
        if data is None:
            path.mkdir(exist_ok=True)
        else:
            path.write_bytes(data)
        files[name] = (path, message)
    return files


BAD_NAMES = [
    "huge_int", "deep_nesting", "deep_array", "lone_surrogate", "surrogate_in_output", "not_utf8", "nan",
    "not_json", "directory",
]  # fmt: skip


@pytest.mark.parametrize("name", BAD_NAMES)
def test_every_command_refuses_a_bad_file_with_its_line_and_no_traceback(tmp_path: Path, name: str) -> None:
    path, message = bad_files(tmp_path / "bad")[name]
    out = tmp_path / "pool"
    expected = f"{path}{message}"

    result = run_cli("seeds", "check", path)
    assert result.exit_code == 2 and expected in result.output, result.output

    result = run_cli(*gen_args(DEAD_URL, path, out))
    assert result.exit_code == 2 and expected in result.output, result.output
    assert not out.exists()  # bad input is refused before the pool is touched

    kept = tmp_path / "kept.jsonl"
    result = run_cli("filter", path, "--out", kept)
    assert result.exit_code == 2 and expected in result.output, result.output
    assert not kept.exists()

    good = write_seeds(tmp_path / "good.jsonl")
    result = run_cli("filter", good, "--out", kept, "--against", path)
    assert result.exit_code == 2 and expected in result.output, result.output
    assert not kept.exists()

    pool = write_pool(tmp_path / "export_pool")
    result = run_cli("export", pool, "--out", tmp_path / "x.json", "--include-seeds", "--seeds", path)
    assert result.exit_code == 2 and expected in result.output, result.output


@pytest.mark.parametrize("name", ["huge_int", "deep_nesting", "lone_surrogate", "not_utf8", "nan"])
def test_a_bad_line_in_the_pool_is_shown_by_status_refused_by_generate_and_repaired(
    tmp_path: Path, seeds: Path, paper_lm: FakeLM, name: str
) -> None:
    path, _ = bad_files(tmp_path / "bad")[name]
    bad_line = path.read_bytes().split(b"\n")[1 if name != "surrogate_in_output" else 0]
    out = tmp_path / "pool"
    out.mkdir()
    (out / "tasks.jsonl").write_bytes(f"{task_line(0)}\n".encode() + bad_line + f"\n{task_line(1)}\n".encode())
    before = snapshot(out)

    status = run_cli("status", out)
    assert status.exit_code == 0, status.output
    assert "size: 2 machine tasks" in status.output
    assert f"selfinstruct repair {out}" in status.output and "skipped 1 bad line (line 2:" in status.output
    assert snapshot(out) == before

    result = run_cli(*gen_args(paper_lm.base_url, seeds, out, "--num-instructions", "4"))
    assert result.exit_code == 4, result.output
    assert f"{out / 'tasks.jsonl'}:2: " in result.output and f"`selfinstruct repair {out}`" in result.output
    after = snapshot(out)
    assert {k: after[k] for k in before} == before  # the tasks are untouched; the refusal is in the ledger
    (run,) = Pool(out).read_runs()
    assert run["exit_reason"] == "error" and "selfinstruct repair" in run["error"]

    result = run_cli("repair", out)
    assert result.exit_code == 0 and "moved 1 bad line" in result.output, result.output
    assert len(check_valid_pool(out)) == 2
    assert (out / "tasks.jsonl.corrupt").read_bytes().endswith(bad_line + b"\n")
    result = run_cli(*gen_args(paper_lm.base_url, seeds, out, "--num-instructions", "4"))
    assert result.exit_code == 0, result.output
    assert len(check_valid_pool(out)) == 4


# -- options, from flags and from a TOML file ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "key", "value", "message"),
    [
        ("--temperature", "temperature", "-1", "must be between 0 and 100, got -1.0"),
        ("--top-p", "top-p", "7", "must be greater than 0 and at most 1, got 7.0"),
        ("--dtype", "dtype", "int3", "must be one of auto, half, float16, bfloat16, float, float32, got 'int3'"),
        ("--gpu-memory-utilization", "gpu-memory-utilization", "7", "must be greater than 0 and at most 1, got 7.0"),
        ("--batch-size", "batch-size", "100000000", "must be between 1 and 10000, got 100000000"),
        ("--timeout", "timeout", "nan", "must be a finite number, got nan"),
        ("--timeout", "timeout", "inf", "must be a finite number, got inf"),
        ("--threshold", "threshold", "5", "must be between 0 and 1, got 5.0"),
        ("--max-retries", "max-retries", "-2", "must be between 0 and 100, got -2"),
        ("--window", "window", "0", "must be between 1 and 65536, got 0 (unresolved instruction requests)"),
        (
            "--concurrency",
            "concurrency",
            "100000000",
            "must be between 1 and 65536, got 100000000 (requests in flight per server)",
        ),
        (
            "--base-url",
            "base-url",
            "ftp://host/v1",
            "must start with http:// or https:// (for example http://127.0.0.1:8000/v1), not ftp://",
        ),
    ],
)
def test_option_ranges_name_the_flag_or_the_file_key(
    tmp_path: Path, flag: str, key: str, value: str, message: str
) -> None:
    result = run_cli("generate", "--out", tmp_path / "pool", flag, value)
    assert result.exit_code == 2 and f"error: {flag} {message}" in result.output, result.output
    toml = tmp_path / "run.toml"
    toml_value = value if key not in ("dtype", "base-url") else f'"{value}"'
    toml_value = {"nan": "nan", "inf": "inf"}.get(value, toml_value)
    toml.write_text(f"[generate]\n{key} = {toml_value}\n")
    result = run_cli("generate", "--out", tmp_path / "pool", "--config", toml)
    assert result.exit_code == 2 and f"error: {toml}: [generate] {key} {message}" in result.output, result.output
    assert not (tmp_path / "pool").exists()


def test_repeated_base_urls_are_checked_and_never_echo_credentials(tmp_path: Path) -> None:
    out = tmp_path / "pool"
    result = run_cli("generate", "--out", out, "--base-url", "http://a:8000/v1", "--base-url", "http://a:8000/v1/")
    assert result.exit_code == 2 and "error: --base-url names http://a:8000/v1 twice" in result.output
    result = run_cli(
        "generate", "--out", out, "--base-url", "http://a:8000/v1", "--base-url", "http://bob:hunter2@b:x/v1"
    )
    assert result.exit_code == 2 and "error: --base-url 'http://b:x/v1' is not a valid URL" in result.output
    assert "hunter2" not in result.output and "bob" not in result.output
    toml = tmp_path / "run.toml"
    toml.write_text('base-url = ["http://a:8000/v1", "http://u:hunter2@a:8000/v1"]\n')
    result = run_cli("generate", "--out", out, "--config", toml)
    assert result.exit_code == 2 and f"error: {toml}: base-url names http://a:8000/v1 twice" in result.output
    assert "hunter2" not in result.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, ": is a directory; --config names a TOML file"),
        (b"\xff\xfe\x00model", ": not UTF-8 text (invalid start byte at byte 0)"),
        (b"classification-demos = -3\n", ": classification-demos must be between 2 and 64, got -3"),
        (b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n", ": not accepted: nested too deeply"),
        (b"seed = 1" + b"0" * 40 + b"\n", ": seed must be between 0 and 9223372036854775807, got 1" + "0" * 40),
        (b"seed = 1" + b"0" * 5000 + b"\n", ": not accepted: "),
        (b"max-new = 1.5\n", ": max-new must be an integer, got 1.5"),
    ],
)
def test_bad_config_files(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "run.toml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    result = run_cli("generate", "--config", path, "--out", tmp_path / "pool")
    assert result.exit_code == 2 and f"error: {path}{message}" in result.output, result.output


def test_flags_show_no_bool_metavar_in_help() -> None:
    for command in (["generate"], ["status"], ["filter"], ["seeds", "check"], ["export"], ["repair"]):
        result = run_cli(*command, "--help")
        assert result.exit_code == 0 and "<bool>" not in result.output, (command, result.output)


# -- the lock, foreign writers, identity -----------------------------------------------------------------


def test_a_deleted_lock_file_does_not_let_a_second_writer_in(tmp_path: Path) -> None:
    holder = Pool(tmp_path / "pool")
    with holder.lock("generate"):
        holder.lock_path.unlink()
        with pytest.raises(PoolLockedError):
            Pool(tmp_path / "pool").lock(wait=0)
        assert Pool(tmp_path / "pool").lock_holder() is not None  # status still sees the holder
        (tmp_path / "pool").joinpath(".lock").write_text("garbage")  # replaced by hand: still locked
        with pytest.raises(PoolLockedError):
            Pool(tmp_path / "pool").lock(wait=0)
    with Pool(tmp_path / "pool").lock(wait=0):
        pass


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.open("a").write(task_line(99) + "\n"), "grew by"),
        (lambda p: p.write_text(task_line(0) + "\n"), "shrank from"),
        (lambda p: (p.unlink(), p.write_text(task_line(0) + "\n" + task_line(1) + "\n")), "was re"),
        (lambda p: p.unlink(), "was deleted or moved away"),
    ],
)  # fmt: skip
def test_append_refuses_when_another_program_changed_the_file(tmp_path: Path, change: Any, message: str) -> None:
    pool = Pool(tmp_path / "pool")
    with pool.lock():
        pool.load()
        first = [task_from_record(json.loads(task_line(i))) for i in range(2)]
        pool.append(first)
        change(pool.tasks_path)
        after = pool.tasks_path.read_bytes() if pool.tasks_path.exists() else None
        with pytest.raises(PoolError, match=message):
            pool.append([task_from_record(json.loads(task_line(2)))])
        assert (pool.tasks_path.read_bytes() if pool.tasks_path.exists() else None) == after


class ForeignWriterLM:
    """A backend that, in its first call after the run's first append, has another program append a task."""

    model = "fake-model"

    def __init__(self, pool_dir: Path) -> None:
        self.pool_dir = pool_dir
        self.written = False
        self.inner = PaperLM()

    def generate(self, prompts: Any, sampling: Sampling, seeds: Any = None) -> list[Completion]:
        tasks = self.pool_dir / "tasks.jsonl"
        if not self.written and tasks.exists() and tasks.stat().st_size:  # the run has appended its first tasks
            self.written = True
            with tasks.open("a") as fh:
                fh.write(task_line(0, model="someone-else") + "\n")  # a duplicate id of the run's first task
        return [Completion(*self.inner(p, {"stop": list(sampling.stop)})) for p in prompts]


def test_a_foreign_writer_during_a_run_stops_it_without_a_duplicate(tmp_path: Path, seeds: Path) -> None:
    out = tmp_path / "pool"
    config = GenerateConfig(
        seeds=str(seeds), prompts=str(PROMPTS), out=str(out), num_instructions=400, batch_size=2, window=8
    )
    backend = ForeignWriterLM(out)
    with pytest.raises(PoolError, match=r"grew by .* that this run did not write"):
        run_generate(config, backend=backend)
    assert backend.written
    (run,) = Pool(out).read_runs()
    assert run["exit_reason"] == "error" and "another program is writing" in run["error"]
    lines = (out / "tasks.jsonl").read_text().splitlines()
    ids = [json.loads(line)["id"] for line in lines]
    assert ids.count("machine_task_000000") == 2  # the foreign copy; this run wrote nothing after it
    assert run["pool_after"] == len(lines) - 1


def test_a_valid_task_without_a_trailing_newline_is_kept(tmp_path: Path, seeds: Path, paper_lm: FakeLM) -> None:
    out = tmp_path / "pool"
    out.mkdir()
    (out / "tasks.jsonl").write_text(task_line(0) + "\n" + task_line(1))  # another tool forgot the newline
    status = run_cli("status", out, "--json")
    assert json.loads(status.output)["pool_size"] == 2 and status.exit_code == 0
    result = run_cli(*gen_args(paper_lm.base_url, seeds, out, "--num-instructions", "5"))
    assert result.exit_code == 0, result.output
    assert "had no newline at the end" in result.output
    tasks = check_valid_pool(out)
    assert [t["id"] for t in tasks[:2]] == ["machine_task_000000", "machine_task_000001"] and len(tasks) == 5
    assert not (out / "tasks.jsonl.corrupt").exists()


def test_a_mistyped_model_leaves_no_identity_and_a_ledger_line(tmp_path: Path, seeds: Path, paper_lm: FakeLM) -> None:
    out = tmp_path / "pool"
    result = run_cli(*gen_args(paper_lm.base_url, seeds, out, "--model", "fake-modle", "--num-instructions", "4"))
    assert result.exit_code == 3, result.output
    assert not (out / "config.json").exists() and not (out / "tasks.jsonl").exists()
    (run,) = Pool(out).read_runs()
    assert run["exit_reason"] == "error" and run["model"] == "fake-modle" and run["accepted"] == 0
    result = run_cli(*gen_args(paper_lm.base_url, seeds, out, "--model", "fake-model", "--num-instructions", "4"))
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["model"] == "fake-model"


@pytest.mark.parametrize("remove", [("config.json",), ("config.json", "runs.jsonl")])
def test_identity_is_checked_against_the_ledger_and_the_tasks_when_config_json_is_gone(
    tmp_path: Path, seeds: Path, remove: tuple[str, ...]
) -> None:
    out = tmp_path / "pool"
    with FakeLM(respond=PaperLM(), models=["model-a", "model-b"]) as lm:
        result = run_cli(*gen_args(lm.base_url, seeds, out, "--model", "model-a", "--num-instructions", "4"))
        assert result.exit_code == 0, result.output
        for name in remove:
            (out / name).unlink()
        before = snapshot(out)
        result = run_cli(*gen_args(lm.base_url, seeds, out, "--model", "model-b", "--num-instructions", "8"))
        assert result.exit_code == 4, result.output
        source = "runs.jsonl" if len(remove) == 1 else "tasks.jsonl"
        assert "model: stored 'model-a', now 'model-b'" in result.output and source in result.output
        assert {k: v for k, v in snapshot(out).items() if k != "runs.jsonl"} == {
            k: v for k, v in before.items() if k != "runs.jsonl"
        }
        assert Pool(out).read_runs()[-1]["exit_reason"] == "error"  # the refused run is in the ledger
        result = run_cli(*gen_args(lm.base_url, seeds, out, "--model", "model-a", "--num-instructions", "8"))
        assert result.exit_code == 0, result.output
        assert len(check_valid_pool(out)) == 8


def test_credentials_in_the_base_url_reach_no_file_and_no_output(tmp_path: Path, seeds: Path, paper_lm: FakeLM) -> None:
    secret = "s3cr3t-Pa55"
    url = paper_lm.base_url.replace("http://", f"http://alice:{secret}@")
    out = tmp_path / "pool"
    result = run_cli(*gen_args(url, seeds, out, "--num-instructions", "4"))
    assert result.exit_code == 0, result.output
    dead = run_cli(*gen_args(f"http://alice:{secret}@127.0.0.1:9/v1", seeds, tmp_path / "dead", "--model", "m"))
    assert dead.exit_code == 3, dead.output
    status = run_cli("status", out, "--json")
    b64 = base64.b64encode(f"alice:{secret}".encode()).decode()
    for text in (result.output, dead.output, status.output):
        assert secret not in text and b64 not in text
    for directory in (out, tmp_path / "dead"):
        for name, data in snapshot(directory).items():
            assert secret.encode() not in data and b64.encode() not in data, name
    assert json.loads((out / "config.json").read_text())["config"]["base_url"] == paper_lm.base_url


# -- status, filter: operators' paper cuts -------------------------------------------------------------------


def test_status_plain_lines_name_the_host_and_keep_ids_whole(tmp_path: Path, seeds: Path, paper_lm: FakeLM) -> None:
    out = tmp_path / "pool"
    assert run_cli(*gen_args(paper_lm.base_url, seeds, out, "--num-instructions", "3")).exit_code == 0
    run_id = Pool(out).read_runs()[0]["run_id"]
    with Pool(out).lock("generate"):
        result = run_cli("status", out)
    assert result.exit_code == 0
    assert f"run {run_id} " in result.output
    assert " on None" not in result.output and f"on {os.uname().nodename}" in result.output
    assert not set("─│┃━┏┗") & set(result.output)


def test_generate_plain_output_has_no_table(tmp_path: Path, seeds: Path, paper_lm: FakeLM) -> None:
    result = run_cli(*gen_args(paper_lm.base_url, seeds, tmp_path / "pool", "--num-instructions", "3"))
    assert result.exit_code == 0
    assert not set("─│┃━┏┗╭╰") & set(result.output), result.output
    assert "totals: " in result.output and "selfinstruct generate: target_reached;" in result.output


def test_filter_refuses_to_overwrite_its_input(tmp_path: Path, seeds: Path) -> None:
    before = seeds.read_bytes()
    for args in (["--out", seeds], ["--out", tmp_path / "k.jsonl", "--rejected", seeds]):
        result = run_cli("filter", seeds, *args)
        assert result.exit_code == 73 and "is the input: filtering a file into itself" in result.output
    result = run_cli("filter", seeds, "--out", tmp_path / "k.jsonl", "--rejected", tmp_path / "k.jsonl")
    assert result.exit_code == 73 and "--out and --rejected name the same file" in result.output
    result = run_cli("filter", seeds, "--out", tmp_path)
    assert result.exit_code == 73 and "is a directory" in result.output
    assert seeds.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["seeds.jsonl"]


def test_filter_outputs_are_readable_by_others(tmp_path: Path, seeds: Path) -> None:
    umask = os.umask(0o022)
    try:
        assert run_cli("filter", seeds, "--out", tmp_path / "k.jsonl").exit_code == 0
    finally:
        os.umask(umask)
    assert (tmp_path / "k.jsonl").stat().st_mode & 0o777 == 0o644


# -- full and read-only filesystems (a small tmpfs; needs mount rights) -----------------------------------


@contextlib.contextmanager
def tmpfs(where: Path, options: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount(8) here to make a small or read-only filesystem")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_filter_on_a_full_or_read_only_filesystem_changes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    text = "Describe the colour number {} in a poem of {} lines, please."
    src.write_text("".join(json.dumps({"instruction": text.format(i, i)}) + "\n" for i in range(3000)))
    with tmpfs(tmp_path / "small", "size=64k") as small:
        result = run_cli("filter", src, "--out", small / "kept.jsonl", "--threshold", "1")  # keeps all: 200 KB
        assert result.exit_code == 73, result.output
        assert "cannot write --out" in result.output and "No space left on device" in result.output
        assert list(small.iterdir()) == []  # the staged file was removed
    with tmpfs(tmp_path / "ro", "ro,size=64k") as ro:
        previous = tmp_path / "kept.jsonl"
        previous.write_text("previous\n")
        result = run_cli("filter", src, "--out", previous, "--rejected", ro / "rejected.jsonl")
        assert result.exit_code == 73, result.output
        assert "cannot write --rejected" in result.output and "Read-only file system" in result.output
        assert previous.read_text() == "previous\n"  # kept was staged, never renamed into place
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "kept.jsonl", "ro", "small"]


def test_generate_on_a_read_only_or_full_filesystem(tmp_path: Path, seeds: Path, paper_lm: FakeLM) -> None:
    with tmpfs(tmp_path / "ro", "ro,size=64k") as ro:
        result = run_cli(*gen_args(paper_lm.base_url, seeds, ro / "pool", "--num-instructions", "4"))
        assert result.exit_code == 4, result.output
        assert "cannot create the pool directory" in result.output and "Read-only file system" in result.output
    # Room for the first group commit (64 tasks of about 1.9 KB from this stand-in) and not for 2,000 tasks:
    # the run must stop on the full disk with whole groups in the pool, never a half-written one.
    with tmpfs(tmp_path / "small", "size=256k") as small:
        out = small / "pool"
        result = run_cli(*gen_args(paper_lm.base_url, seeds, out, "--num-instructions", "2000", "--no-keep-rejected"))
        assert result.exit_code == 4, result.output
        assert "No space left on device" in result.output and "Traceback" not in result.output
        tasks = check_valid_pool(out)  # whole groups only, nothing half-written
        assert tasks
        assert "refusing" not in result.output  # a failed group is never offered twice


def test_config_that_cannot_be_written_after_the_tasks_landed_fails_nothing(
    tmp_path: Path, seeds: Path, paper_lm: FakeLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first group's tasks are appended, then config.json cannot be written (a disk that just filled):
    # the tasks stay, once, the run goes on, and the identity is checked against the tasks next time.
    def full(self: Pool, config: Any) -> None:
        raise PoolError(f"could not write {self.config_path}: No space left on device; the previous file is unchanged")

    out = tmp_path / "pool"
    with monkeypatch.context() as patch:
        patch.setattr(Pool, "write_config", full)
        result = run_cli(*gen_args(paper_lm.base_url, seeds, out, "--num-instructions", "6"))
    assert result.exit_code == 0, result.output
    assert "config.json: No space left on device" in result.output and "the tasks record their model" in result.output
    assert "refusing" not in result.output and not (out / "config.json").exists()
    tasks = check_valid_pool(out)
    assert len(tasks) >= 6
    again = run_cli(*gen_args(paper_lm.base_url, seeds, out, "--num-instructions", "10"))
    assert again.exit_code == 0, again.output
    assert len(check_valid_pool(out)) >= 10 and (out / "config.json").exists()


# -- signals, as real processes -------------------------------------------------------------------------------


def spawn(lm: FakeLM, seeds: Path, out: Path, *extra: str, wrapper: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    cmd = [*wrapper, sys.executable, "-m", "selfinstruct", *gen_args(lm.base_url, seeds, out, *extra)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def catches_stop_signals(pid: int) -> bool:
    """Whether the process has its own handlers for SIGHUP, SIGINT and SIGTERM (Linux's /proc SigCgt mask;
    elsewhere, a second after the start)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            line = next((x for x in status if x.startswith("SigCgt:")), None)
    except FileNotFoundError:
        return False
    except OSError:
        time.sleep(1.0)
        return True
    if line is None:
        time.sleep(1.0)
        return True
    mask = int(line.split()[1], 16)
    return all(mask >> (sig - 1) & 1 for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM))


def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


@pytest.mark.slow
def test_double_sigterm_like_timeout_sends_stops_once_with_a_ledger_line(seeds: Path, tmp_path: Path) -> None:
    out = tmp_path / "pool"
    with FakeLM(respond=PaperLM(), delay=0.05) as lm:
        for attempt in range(4):
            size = (out / "tasks.jsonl").stat().st_size if attempt else 0
            proc = spawn(lm, seeds, out, "--num-instructions", "100000")
            wait_for(lambda s=size: (out / "tasks.jsonl").exists() and (out / "tasks.jsonl").stat().st_size > s)
            time.sleep(random.uniform(0.0, 0.3))
            proc.send_signal(signal.SIGTERM)
            proc.send_signal(signal.SIGTERM)  # `timeout` signals the child and then its process group
            output, _ = proc.communicate(timeout=60)
            assert proc.returncode == 130, output
            assert "Traceback" not in output and "selfinstruct generate: terminated;" in output
    runs = Pool(out).read_runs()
    assert len(runs) == 4 and all(r["exit_reason"] == "terminated" for r in runs)
    assert len(check_valid_pool(out)) == runs[-1]["pool_after"]


@pytest.mark.slow
def test_timeout_command_itself(seeds: Path, tmp_path: Path) -> None:
    if shutil.which("timeout") is None:
        pytest.skip("coreutils timeout is not installed")
    out = tmp_path / "pool"
    with FakeLM(respond=PaperLM(), delay=0.05) as lm:
        proc = spawn(lm, seeds, out, "--num-instructions", "100000", wrapper=("timeout", "-s", "TERM", "4"))
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 124, output  # timeout's own code for "the time ran out"
    assert "Traceback" not in output
    (run,) = Pool(out).read_runs()
    assert run["exit_reason"] == "terminated"
    check_valid_pool(out)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_model_detection_is_recorded(seeds: Path, tmp_path: Path, sig: int) -> None:
    out = tmp_path / "pool"
    with FakeLM(respond=PaperLM(), delay=3.0) as lm:  # GET /v1/models takes 3 s
        proc = spawn(lm, seeds, out)
        wait_for(lambda: bool(lm.log) or any(lm.requests))  # the process is waiting for the model list
        wait_for(lambda: Pool(out).lock_holder() is not None)
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert "Traceback" not in output
    (run,) = Pool(out).read_runs()
    assert run["exit_reason"] == ("interrupted" if sig == signal.SIGINT else "terminated")
    assert run["rounds"] == 0 and not (out / "config.json").exists()


@pytest.mark.slow
def test_signals_at_random_moments_never_give_a_traceback_or_lose_the_ledger(seeds: Path, tmp_path: Path) -> None:
    out = tmp_path / "pool"
    rng = random.Random(1234)
    with FakeLM(respond=PaperLM(), delay=0.02) as lm:
        for _ in range(8):
            proc = spawn(lm, seeds, out, "--num-instructions", "100000")
            # From the moment the handlers are in: before that the interpreter itself is starting (tens of
            # ms), where no program can catch a signal, and a loaded machine stretches that window.
            wait_for(lambda p=proc: catches_stop_signals(p.pid) or p.poll() is not None)
            time.sleep(rng.uniform(0.0, 2.2))
            sig = rng.choice([signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
            holding = Pool(out).lock_holder() is not None
            runs_before = len(Pool(out).read_runs())
            proc.send_signal(sig)
            if rng.random() < 0.5:
                proc.send_signal(sig)
            output, _ = proc.communicate(timeout=60)
            assert "Traceback" not in output, output
            assert proc.returncode == 130, output
            if holding:  # the run had its lock: it must be in the ledger
                assert len(Pool(out).read_runs()) == runs_before + 1, output
            check_valid_pool(out)


@pytest.mark.slow
def test_server_down_and_bad_key_leave_a_ledger_line(seeds: Path, tmp_path: Path) -> None:
    out = tmp_path / "pool"
    proc = subprocess.run(
        [sys.executable, "-m", "selfinstruct", *gen_args(DEAD_URL, seeds, out, "--model", "m")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr
    with FakeLM(respond=PaperLM(), required_api_key="right") as lm:
        env = {**os.environ, "SELFINSTRUCT_API_KEY": "wrong"}
        cmd = [sys.executable, "-m", "selfinstruct", *gen_args(lm.base_url, seeds, out, "--model", "fake-model")]
        bad_key = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert bad_key.returncode in (2, 3) and "Traceback" not in bad_key.stderr and "wrong" not in bad_key.stderr
    runs = Pool(out).read_runs()
    assert [r["exit_reason"] for r in runs] == ["error", "error"] and all(r["error"] for r in runs)
    assert not (out / "config.json").exists()


# == issue 19: no output replaces an input, no outside text drives the terminal, no unbounded read ========

SELFINSTRUCT = [sys.executable, "-m", "selfinstruct"]


def full_pool(root: Path) -> Path:
    """A pool with every file a pool can hold, each with distinct content."""
    pool = write_pool(root / "pool")
    (pool / "runs.jsonl").write_text(json.dumps({"run_id": "r1", "exit_reason": "target", "accepted": 6}) + "\n")
    (pool / "judgements.jsonl").write_text("")
    (pool / "config.json").write_text(json.dumps({"config": {"model": "fake-model"}}) + "\n")
    (pool / "rejected.jsonl").write_text(json.dumps({"instruction": "x", "reject_reason": "too_short"}) + "\n")
    (pool / "tasks.jsonl.corrupt").write_text("# moved\n{oops\n")
    return pool


def inputs_snapshot(*paths: Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for path in paths:
        found.update({f"{path}/{k}": v for k, v in snapshot(path).items()} if path.is_dir() else {})
        if path.is_file():
            found[str(path)] = path.read_bytes()
    return found


POOL_FILE_NAMES = ["tasks.jsonl", "runs.jsonl", "judgements.jsonl", "config.json", "rejected.jsonl", ".lock",
                   "tasks.jsonl.corrupt"]  # fmt: skip


@pytest.mark.parametrize("name", POOL_FILE_NAMES)
@pytest.mark.parametrize("command", ["report", "export"])
def test_no_output_replaces_a_pool_file(tmp_path: Path, seeds: Path, name: str, command: str) -> None:
    pool = full_pool(tmp_path)
    before = inputs_snapshot(pool, seeds)
    link = tmp_path / "innocent.jsonl"
    link.symlink_to(pool / name)
    for target in (pool / name, link):
        extra = ["--format", "seed"] if command == "export" else ["--seeds", str(seeds)]
        result = run_cli(command, pool, "--out", target, *extra)
        assert result.exit_code == 73, result.output
        assert "a file of the pool" in result.output and "Traceback" not in result.output
        assert inputs_snapshot(pool, seeds) == before
    assert link.is_symlink()


def test_report_and_export_never_replace_their_seed_file(tmp_path: Path, seeds: Path) -> None:
    pool = full_pool(tmp_path)
    before = inputs_snapshot(pool, seeds)
    result = run_cli("report", pool, "--seeds", seeds, "--out", seeds)
    assert result.exit_code == 73 and "an input of this command" in result.output
    result = run_cli("export", pool, "--seeds", seeds, "--out", seeds, "--format", "seed")
    assert result.exit_code == 73 and "an input of this command" in result.output
    hard = tmp_path / "hard.jsonl"
    os.link(seeds, hard)  # the same file by another name
    result = run_cli("export", pool, "--seeds", seeds, "--out", hard, "--format", "seed")
    assert result.exit_code == 73 and "an input of this command" in result.output
    assert inputs_snapshot(pool, seeds) == before


def test_export_refuses_to_name_its_data_file_like_its_trainer_config(tmp_path: Path) -> None:
    pool = full_pool(tmp_path)
    out = tmp_path / "data" / "dataset_info.json"
    result = run_cli("export", pool, "--out", out)
    assert result.exit_code == 73 and "trainer config" in result.output
    assert not out.exists()
    result = run_cli("export", pool, "--out", out, "--no-trainer-configs")  # then it is just a name
    assert result.exit_code == 0 and isinstance(json.loads(out.read_text()), list)


def _read_fifo(path: Path, into: list[bytes]) -> Any:
    import threading

    def read() -> None:
        with open(path, "rb") as fh:
            into.append(fh.read())

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("command", ["report", "export", "filter"])
def test_a_fifo_output_is_written_into_not_replaced(tmp_path: Path, seeds: Path, command: str) -> None:
    pool = full_pool(tmp_path)
    fifo = tmp_path / "out.jsonl"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = _read_fifo(fifo, got)
    args = {"report": ["report", pool, "--seeds", seeds], "export": ["export", pool, "--no-trainer-configs"],
            "filter": ["filter", seeds]}[command]  # fmt: skip
    result = run_cli(*args, "--out", fifo)
    reader.join(10)
    assert result.exit_code == 0, result.output
    assert fifo.is_fifo() and got and got[0]
    if command == "report":
        assert got[0].startswith(b"<!DOCTYPE html>") or b"<html" in got[0][:200]
    else:
        assert all(json.loads(line) for line in got[0].decode().splitlines())


def test_a_format_that_cannot_stream_is_refused_for_a_fifo(tmp_path: Path) -> None:
    pool = full_pool(tmp_path)
    fifo = tmp_path / "out.parquet"
    os.mkfifo(fifo)
    result = run_cli("export", pool, "--out", fifo)
    assert result.exit_code == 73 and "cannot be streamed" in result.output
    assert fifo.is_fifo()


@pytest.mark.slow
def test_export_and_report_to_dev_stdout_print_and_leave_the_link(tmp_path: Path, seeds: Path) -> None:
    pool = full_pool(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([*SELFINSTRUCT, "export", str(pool), "--out", "/dev/stdout", "--format", "seed"],
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len([json.loads(line) for line in done.stdout.splitlines()]) == 6
    assert "no trainer configs" in done.stderr and Path("/dev/stdout").is_symlink()
    done = subprocess.run([*SELFINSTRUCT, "report", str(pool), "--seeds", str(seeds), "--out", "/dev/stdout"],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert done.returncode == 0 and "<html" in done.stdout and "Traceback" not in done.stderr


def test_concurrent_exports_into_one_directory_all_land_in_dataset_info(tmp_path: Path) -> None:
    import threading

    from selfinstruct.views.export import ExportOptions, export_pool

    pool = full_pool(tmp_path)
    out_dir = tmp_path / "data"
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            export_pool(pool, out_dir / f"set{i}.jsonl", ExportOptions())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    entries = json.loads((out_dir / "dataset_info.json").read_text())
    assert sorted(entries) == sorted(f"set{i}" for i in range(10))
    assert not [p for p in out_dir.iterdir() if p.name.endswith(".tmp")]


# -- text from outside: markup and escape sequences ------------------------------------------------------

HOSTILE_TEXTS = ["[INST] Write a poem. [/INST]", "Sort [a, b] and [/]", "\x1b]0;pwned\x07Title \x1b[2J\x9b31m"]


def test_seed_text_with_markup_and_escapes_is_printed_as_text(tmp_path: Path) -> None:
    records = [dict(MINI_SEEDS[0]), dict(MINI_SEEDS[1]), dict(MINI_SEEDS[2])]
    for record, text in zip(records, HOSTILE_TEXTS, strict=True):
        record["instruction"] = f"{text} {record['instruction']}"
    path = tmp_path / "seeds[v2].jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = run_cli("seeds", "check", path, "--pairs", "3")
    assert result.exit_code in (0, 2), result.output
    assert "Traceback" not in result.output and "MarkupError" not in result.output
    assert "seeds[v2].jsonl" in result.output.replace("\n", "")
    assert "\x1b" not in result.output and "\x07" not in result.output and "\x9b" not in result.output


def test_ledger_values_with_markup_and_escapes_are_shown_as_text(tmp_path: Path) -> None:
    pool = write_pool(tmp_path / "pool[v2]")
    runs = [{"run_id": "[/]", "exit_reason": "error", "error": HOSTILE_TEXTS[2] + " [bold]x[/bold]",
             "acceptance_rate": "[/]", "seconds": "x", "rounds": "[a, b]"}]  # fmt: skip
    (pool / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs))
    before = snapshot(pool)
    for extra in ([], ["--json"]):
        result = run_cli("status", pool, *extra)
        assert result.exit_code == 0, result.output
        assert "\x1b" not in result.output and "\x07" not in result.output
        assert "pool[v2]" in result.output
    result = run_cli("status", pool)
    assert "[a, b]" in result.output and "[/]" in result.output and "[bold]x[/bold]" in result.output
    assert snapshot(pool) == before


def test_the_ledger_keeps_no_escape_sequences(tmp_path: Path) -> None:
    pool = Pool(tmp_path / "pool")
    pool.directory.mkdir()
    with pool.lock():
        pool.append_run({"run_id": "r", "error": "server said \x1b]0;pwned\x07\x1b[31mno\x1b[0m\r\n!"})
    (run,) = pool.read_runs()
    assert run["error"] == "server said no\n!"


def test_generate_help_shows_the_config_tables() -> None:
    result = CliRunner().invoke(app, ["generate", "--help"], env={"COLUMNS": "400"})
    text = " ".join(result.output.split())
    assert "Also the [vllm] table" in text and "Also the [request] table" in text


# -- unbounded reads --------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_device_as_an_input_is_refused_at_once(tmp_path: Path, seeds: Path, device: str) -> None:
    message = "is a character device (like /dev/zero), not a file"
    cases = [
        ["seeds", "check", device],
        gen_args(DEAD_URL, Path(device), tmp_path / "pool"),
        ["filter", device, "--out", tmp_path / "kept.jsonl"],
        ["filter", seeds, "--out", tmp_path / "kept.jsonl", "--against", device],
        [*gen_args(DEAD_URL, seeds, tmp_path / "pool"), "--config", device],
    ]
    for args in cases:
        result = run_cli(*args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    assert not (tmp_path / "pool").exists() and not (tmp_path / "kept.jsonl").exists()


def test_a_huge_seed_task_is_refused_with_its_line(tmp_path: Path) -> None:
    records = [dict(MINI_SEEDS[0]), dict(MINI_SEEDS[1])]
    records[1]["instruction"] = "Explain this. " + "x" * 10_000_000
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = run_cli(*gen_args(DEAD_URL, path, tmp_path / "pool"))
    assert result.exit_code == 2 and f"{path}:2: this seed task holds 10,000," in result.output
    assert "SELFINSTRUCT_MAX_SEED_CHARS" in result.output and not (tmp_path / "pool").exists()


def test_a_data_file_over_the_limit_is_refused_before_it_is_read(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("SELFINSTRUCT_MAX_INPUT_MB", "0.001")
    path = write_seeds(tmp_path / "seeds.jsonl")
    result = run_cli("filter", path, "--out", tmp_path / "kept.jsonl")
    assert result.exit_code == 2 and "more than the 1,000 bytes allowed" in result.output
    assert "SELFINSTRUCT_MAX_INPUT_MB" in result.output


def test_a_pipe_as_input_is_read_with_the_bound(tmp_path: Path) -> None:
    fifo = tmp_path / "seeds.fifo"
    os.mkfifo(fifo)
    import threading

    def feed() -> None:
        with open(fifo, "w") as fh:
            fh.write("".join(json.dumps(r) + "\n" for r in MINI_SEEDS))

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    result = run_cli("filter", fifo, "--out", tmp_path / "kept.jsonl")
    thread.join(10)
    assert result.exit_code == 0, result.output


# -- identity -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["model", "prompt", "messages", "max_tokens", "stop", "seed", "n", "echo"])
def test_request_fields_the_loop_sets_are_refused(tmp_path: Path, seeds: Path, field: str) -> None:
    result = run_cli(*gen_args(DEAD_URL, seeds, tmp_path / "pool"), "--request-field", f"{field}=1")
    assert result.exit_code == 2 and f"request field {field!r} cannot be set" in result.output
    config = tmp_path / "c.toml"
    config.write_text(f'[request]\n{field} = "x"\n')
    result = run_cli(*gen_args(DEAD_URL, seeds, tmp_path / "pool"), "--config", config)
    assert result.exit_code == 2 and f"request field {field!r} cannot be set" in result.output
    assert not (tmp_path / "pool").exists()


# -- standard output: closed pipes, full disks --------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ["status", "{pool}"],
        ["status", "--json", "{pool}"],
        ["--help"],
        ["seeds", "check"],
        ["report", "--json", "{pool}"],
    ],
)
def test_stdout_to_a_full_disk_is_one_line_and_exit_74(tmp_path: Path, args: list[str]) -> None:
    pool = full_pool(tmp_path)
    before = snapshot(pool)
    argv = [a.replace("{pool}", str(pool)) for a in args]
    with open("/dev/full", "w") as full:
        done = subprocess.run([*SELFINSTRUCT, *argv], stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert done.returncode == 74, done.stderr
    assert done.stderr.strip().splitlines() == [
        "selfinstruct: cannot write to standard output: No space left on device"
    ]
    assert snapshot(pool) == before


@pytest.mark.slow
def test_status_into_a_pipe_closed_early_exits_0(tmp_path: Path) -> None:
    pool = write_pool(tmp_path / "pool")
    runs = [{"run_id": f"r{i}", "exit_reason": "target", "error": "x" * 2000} for i in range(200)]
    (pool / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs))
    command = f'{sys.executable} -m selfinstruct status {pool} --runs 200 | head -1; echo "rc=${{PIPESTATUS[0]}}"'
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
    assert done.stdout.splitlines()[-1] == "rc=0" and done.stdout.startswith("pool:"), done
    assert done.stderr == ""


# -- secrets in everything written ---------------------------------------------------------------------------


def test_a_known_secret_never_reaches_the_pool_files_or_an_export(tmp_path: Path, monkeypatch: Any) -> None:
    from selfinstruct import redact

    secret = "sk-live-0123456789abcdef"
    monkeypatch.setattr(redact, "_secrets", ())
    redact.register(secret)
    try:
        pool = Pool(tmp_path / "pool")
        pool.directory.mkdir()
        record = json.loads(task_line(1))
        record["instances"][0]["output"] = f"My key is {secret}."
        with pool.lock():
            pool.append([task_from_record(record)])
            pool.append_judgements([{"task_id": "machine_task_000001", "reply": f"Score: 5 ({secret})"}])
            pool.append_rejected([{"instruction": secret, "reject_reason": "x"}])
            pool.append_run({"run_id": "r", "error": f"echo {secret}"})
        for name in ("tasks.jsonl", "judgements.jsonl", "rejected.jsonl", "runs.jsonl"):
            text = (pool.directory / name).read_text()
            assert secret not in text and "<redacted>" in text, name
        out = tmp_path / "seed.jsonl"
        (pool.directory / "tasks.jsonl").write_text(task_line(2).replace("Item 2.", f"Item {secret}") + "\n")
        assert run_cli("export", pool.directory, "--out", out, "--format", "seed").exit_code == 0
        assert secret not in out.read_text() and "<redacted>" in out.read_text()
    finally:
        redact.forget()


# -- exports as trainers read them ----------------------------------------------------------------------------


def test_alpaca_without_system_maps_no_system_column(tmp_path: Path) -> None:
    pool = full_pool(tmp_path)
    result = run_cli("export", pool, "--out", tmp_path / "a.jsonl", "--format", "alpaca")
    assert result.exit_code == 0, result.output
    entry = json.loads((tmp_path / "dataset_info.json").read_text())["a"]
    assert "system" not in entry["columns"]
    result = run_cli("export", pool, "--out", tmp_path / "b.jsonl", "--format", "alpaca", "--system", "Be brief.")
    entry = json.loads((tmp_path / "dataset_info.json").read_text())["b"]
    assert entry["columns"]["system"] == "system"
    # Axolotl's `type: alpaca` never reads a system field: with --system the block names the Alpaca strategy
    # that puts each record's system in front of the same prompt; without, plain `type: alpaca`.
    assert "type: alpaca_w_system.load_instruct\n" in (tmp_path / "b.axolotl.yml").read_text()
    assert "type: alpaca\n" in (tmp_path / "a.axolotl.yml").read_text()
    assert "Axolotl" not in result.output


@pytest.mark.parametrize(
    ("args", "warning"),
    [
        (["--format", "sharegpt", "--out", "{tmp}/s.jsonl"], "TRL does not read sharegpt records"),
        (["--format", "openai", "--out", "{tmp}/o.json"], "OpenAI fine-tuning takes JSONL files only"),
    ],
)
def test_exports_a_trainer_would_misread_are_warned(tmp_path: Path, args: list[str], warning: str) -> None:
    pool = full_pool(tmp_path)
    result = run_cli("export", pool, *[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code == 0 and warning in " ".join(result.output.split())


def test_push_to_hub_without_the_export_extra_writes_nothing(tmp_path: Path, monkeypatch: Any) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "huggingface_hub" else real(n, *a))
    pool = full_pool(tmp_path)
    out = tmp_path / "train.jsonl"
    result = run_cli("export", pool, "--out", out, "--push-to-hub", "me/data")
    assert result.exit_code == 2 and "--push-to-hub needs the" in result.output and "huggingface_hub" in result.output
    assert not out.exists() and not (tmp_path / "dataset_info.json").exists()


def test_a_report_of_a_pool_with_huge_fields_stays_small(tmp_path: Path, seeds: Path) -> None:
    huge = "w" * 5_000_000
    record = json.loads(task_line(99))
    record["instruction"] = huge + " describe it."
    record["instances"][0]["output"] = huge
    pool = write_pool(tmp_path / "pool")
    with (pool / "tasks.jsonl").open("a") as fh:
        fh.write(json.dumps(record) + "\n")
    rejected = [
        {"instruction": "Write a poem about the sea.", "reject_reason": huge},
        {"instruction": "Draw a picture of a cat.", "reject_reason": "blocked_keyword", "keyword": huge},
    ]
    (pool / "rejected.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rejected))
    (pool / "runs.jsonl").write_text(json.dumps({"run_id": "r", "rejected": {huge: 1}}) + "\n")
    out = tmp_path / "report.html"
    result = run_cli("report", pool, "--seeds", seeds, "--out", out)
    assert result.exit_code == 0, result.output
    assert out.stat().st_size < 1_000_000, out.stat().st_size


@pytest.mark.slow
@pytest.mark.parametrize("command", [["status", "{pool}"], ["generate", "--help"]])
def test_a_signal_in_the_first_moments_never_gives_a_traceback_from_selfinstruct(
    tmp_path: Path, command: list[str]
) -> None:
    """SIGINT at random moments of the first 0.5 s of a command: exit 130 (or 0 when it finished first, or
    the signal's own death before Python runs any code), never a traceback through our code. Python's own
    start-up is outside the package's first line: the installed 00-selfinstruct-startup.pth (tools/build_hooks.py)
    holds SIGINT back from the first .pth file site reads, and selfinstruct/__init__.py lets it through to
    handlers that only note it; the entry point then exits 130 quietly. Only Python's own first steps, before
    any .pth file (a few milliseconds: its standard streams, site importing os), are outside any installed
    file's reach: a traceback from there alone is tolerated (where the .pth is not installed, also from the
    launcher's first line)."""
    pool = write_pool(tmp_path / "pool")
    script = Path(sys.executable).with_name("selfinstruct")  # the console script users run, when installed
    launcher = [str(script)] if script.exists() else SELFINSTRUCT
    held = (Path(sysconfig.get_paths()["purelib"]) / "00-selfinstruct-startup.pth").exists()
    rng = random.Random(19)
    ours = 0
    for _ in range(12):
        proc = subprocess.Popen([*launcher, *(a.format(pool=pool) for a in command)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        time.sleep(rng.uniform(0.0, 0.5))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        if "Traceback" in err or "Exception ignored" in err:
            assert "init_import_site" in err or not re.search(r'File "[^"]*/selfinstruct/[\w/]+\.py"', err), err
            if held:  # not in the launcher's first import (`import re`): only Python's own first steps are left
                assert not re.search(r'File "[^"]*/selfinstruct", line', err), err
        else:
            assert proc.returncode in (0, 130, -signal.SIGINT), err
            ours += proc.returncode == 130
    assert ours  # some signals did land in our handlers


@pytest.mark.parametrize("redirect", [">", ">>"])
def test_dev_stdout_redirected_to_a_file_takes_records_and_keeps_the_shell_mode(tmp_path: Path, redirect: str) -> None:
    """`export --out /dev/stdout > file` writes JSON Lines into the file (a name without a suffix is a
    datasets directory only when it is not one of the process's own streams), and `>>` appends."""
    pool = full_pool(tmp_path)
    out = tmp_path / "records.jsonl"
    out.write_text("kept\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = " ".join([*SELFINSTRUCT, "export", str(pool), "--out", "/dev/stdout", "-q", redirect, str(out)])
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = out.read_text().splitlines()
    assert (lines[0] == "kept") == (redirect == ">>")
    assert all("messages" in json.loads(line) for line in lines[redirect == ">>" :]) and len(lines) > 3


def test_a_stop_that_a_dependency_wrapped_ends_quietly_with_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A signal landing while Python builds a class (typer imports ``platform``, whose ``cached_property``
    runs ``__set_name__``) comes back as a RuntimeError caused by the stop: still a stop, exit 130, no
    traceback."""
    import selfinstruct.cli as cli
    from selfinstruct import stopping

    def interrupted_import() -> None:
        stop = stopping.StopRequested(signal.SIGINT)
        raise RuntimeError("Error calling __set_name__ on 'cached_property' instance") from stop

    monkeypatch.setattr(cli, "app", interrupted_import)
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 130
    err = capsys.readouterr().err
    assert "stopped by SIGINT; no run was in progress" in err and "Traceback" not in err
    stopping.reset()


class WrappedStopLM:
    """A backend whose first call meets a signal inside code we do not own, which wrapped the stop."""

    model = "fake-model"

    def generate(self, prompts: Any, sampling: Sampling, seeds: Any = None) -> list[Completion]:
        from selfinstruct import stopping

        raise RuntimeError("a dependency's own error") from stopping.StopRequested(signal.SIGTERM)


def test_a_wrapped_stop_during_a_run_is_recorded_as_a_stop_not_an_error(tmp_path: Path, seeds: Path) -> None:
    out = tmp_path / "pool"
    config = GenerateConfig(seeds=str(seeds), prompts=str(PROMPTS), out=str(out), num_instructions=10, batch_size=2)
    outcome = run_generate(config, backend=WrappedStopLM())  # type: ignore[arg-type]
    assert outcome.exit_reason == "terminated"
    (run,) = Pool(out).read_runs()
    assert run["exit_reason"] == "terminated" and not run.get("error")
