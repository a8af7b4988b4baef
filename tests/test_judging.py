"""Tests for selfinstruct.loop.judging: scoring an existing pool after the fact, resumably, against the loopback
stand-in server."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from fakelm import FakeLM
from paperlm import PaperLM

from selfinstruct.engines import Backend, BackendOptions, Completion, Sampling, make_backend
from selfinstruct.errors import BackendError, InputError, PoolError, PoolLockedError
from selfinstruct.loop.judging import DONE, LIMIT, JudgeOptions, run_judge
from selfinstruct.pool.directory import Pool, machine_task_id
from selfinstruct.pool.task import Instance, Task
from selfinstruct.protocol.judge import PROBLEM_NO_SCORE, Judgement, JudgeTemplate, with_judgement
from selfinstruct.stopping import INTERRUPTED

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"
TEMPLATE = JudgeTemplate.load(PROMPTS_DIR)


def make_pool(directory: Path, n: int, *, judged: dict[int, Judgement] | None = None) -> Pool:
    tasks = []
    for i in range(n):
        task = Task(f"Describe thing number {i} in detail.", [Instance("", f"Thing {i} is fine.")], False,
                    machine_task_id(i), f"thing_{i}", {"source": "machine"})  # fmt: skip
        if judged and i in judged:
            task = with_judgement(task, judged[i])
        tasks.append(task)
    pool = Pool(directory)
    with pool.lock():
        pool.load()
        pool.append(tasks)
    return pool


def sidecar(directory: Path) -> list[dict[str, Any]]:
    path = directory / "judgements.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def judge_lm() -> Iterator[FakeLM]:
    with FakeLM(respond=PaperLM(), models=["judge-model"]) as lm:
        yield lm


def http_backend(lm: FakeLM) -> Backend:
    return make_backend("openai", BackendOptions(base_url=lm.base_url, max_retries=0))


def test_scores_every_task_and_appends_one_line_each(judge_lm: FakeLM, tmp_path: Path) -> None:
    make_pool(tmp_path, 10)
    before = (tmp_path / "tasks.jsonl").read_bytes()
    events: list[tuple[str, Any]] = []
    outcome = run_judge(tmp_path, lambda: http_backend(judge_lm), TEMPLATE, JudgeOptions(batch_size=4),
                        on_event=lambda k, p: events.append((k, p)))  # fmt: skip
    assert outcome.exit_reason == DONE and outcome.judged == outcome.todo == 10 and outcome.pool_size == 10
    assert outcome.scored + outcome.failed == 10 and outcome.failed >= 1  # the scripted judge babbles sometimes
    assert set(outcome.problems) == {PROBLEM_NO_SCORE}
    assert (tmp_path / "tasks.jsonl").read_bytes() == before  # never rewritten
    lines = sidecar(tmp_path)
    assert [line["id"] for line in lines] == [machine_task_id(i) for i in range(10)]
    assert all(line["model"] == "judge-model" and line["rubric"] == TEMPLATE.fingerprint() for line in lines)
    assert all("raw" in line and (line["score"] is None) == ("problem" in line) for line in lines)
    assert [k for k, _ in events].count("batch") == 3
    prompts = [body["prompt"] for body in judge_lm.requests]
    assert all(p.endswith("\nScore:") for batch in prompts for p in (batch if isinstance(batch, list) else [batch]))


def test_resume_skips_what_this_judge_scored(judge_lm: FakeLM, tmp_path: Path) -> None:
    make_pool(tmp_path, 9)
    first = run_judge(tmp_path, lambda: http_backend(judge_lm), TEMPLATE, JudgeOptions(batch_size=2, limit=5))
    assert first.exit_reason == LIMIT and first.judged == 5
    second = run_judge(tmp_path, lambda: http_backend(judge_lm), TEMPLATE, JudgeOptions(batch_size=2))
    assert second.already == 5 and second.judged == 4 and second.exit_reason == DONE
    third = run_judge(tmp_path, lambda: http_backend(judge_lm), TEMPLATE, JudgeOptions())
    assert third.judged == 0 and third.already == 9
    ids = [line["id"] for line in sidecar(tmp_path)]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 9  # nothing judged twice


def test_retry_failed_judges_only_the_unscored_again(judge_lm: FakeLM, tmp_path: Path) -> None:
    make_pool(tmp_path, 16)
    first = run_judge(tmp_path, lambda: http_backend(judge_lm), TEMPLATE, JudgeOptions())
    assert first.failed >= 1
    again = run_judge(tmp_path, lambda: http_backend(judge_lm), TEMPLATE, JudgeOptions(retry_failed=True))
    assert again.judged == first.failed


def test_another_judge_or_rubric_scores_again(tmp_path: Path) -> None:
    make_pool(tmp_path, 3)
    with FakeLM(respond=PaperLM(), models=["judge-a"]) as lm:
        run_judge(tmp_path, lambda: http_backend(lm), TEMPLATE, JudgeOptions())
        edited = JudgeTemplate(TEMPLATE.text + "\nBe strict.")
        assert run_judge(tmp_path, lambda: http_backend(lm), edited, JudgeOptions()).judged == 3
    with FakeLM(respond=PaperLM(), models=["judge-b"]) as lm:
        assert run_judge(tmp_path, lambda: http_backend(lm), TEMPLATE, JudgeOptions()).judged == 3
    assert len(sidecar(tmp_path)) == 9


def test_judgements_made_by_generate_count_as_done(judge_lm: FakeLM, tmp_path: Path) -> None:
    embedded = Judgement(5, "fine", "judge-model", TEMPLATE.fingerprint(), "t")
    make_pool(tmp_path, 4, judged={0: embedded, 1: embedded})
    outcome = run_judge(tmp_path, lambda: http_backend(judge_lm), TEMPLATE, JudgeOptions())
    assert outcome.already == 2 and outcome.judged == 2


class Scripted:
    """A batch backend that answers from a list and can fail or be interrupted on a given call."""

    model = "scripted"

    def __init__(self, replies: Sequence[str], *, interrupt_on: int | None = None, fail_on: int | None = None,
                 short: bool = False) -> None:  # fmt: skip
        self.replies = list(replies)
        self.calls = 0
        self.interrupt_on = interrupt_on
        self.fail_on = fail_on
        self.short = short
        self.closed = False

    def generate(
        self, prompts: Sequence[Any], sampling: Sampling, seeds: Sequence[int] | None = None
    ) -> list[Completion]:
        self.calls += 1
        if self.calls == self.interrupt_on:
            raise KeyboardInterrupt
        if self.calls == self.fail_on:
            raise BackendError("server went away")
        out = [Completion(self.replies.pop(0) if self.replies else " 3", "stop") for _ in prompts]
        return out[:-1] if self.short else out

    def close(self) -> None:
        self.closed = True


def test_garbage_replies_are_counted_and_kept(tmp_path: Path) -> None:
    make_pool(tmp_path, 5)
    replies = [" 4\nReason: ok", "\x00\x01 junk", " Score: 11", "", " 2.5"]
    backend = Scripted(replies)
    outcome = run_judge(tmp_path, lambda: backend, TEMPLATE, JudgeOptions())
    assert dict(outcome.scores) == {4: 1, 2.5: 1} and dict(outcome.problems) == {"no_score": 2, "off_scale": 1}
    assert outcome.mean == 3.25 and backend.closed
    assert [line["score"] for line in sidecar(tmp_path)] == [4, None, None, None, 2.5]


def test_interrupt_keeps_the_batches_already_stored(tmp_path: Path) -> None:
    make_pool(tmp_path, 6)
    backend = Scripted([], interrupt_on=2)
    outcome = run_judge(tmp_path, lambda: backend, TEMPLATE, JudgeOptions(batch_size=2))
    assert outcome.exit_reason == INTERRUPTED and outcome.judged == 2 and backend.closed
    assert len(sidecar(tmp_path)) == 2
    assert run_judge(tmp_path, lambda: Scripted([]), TEMPLATE, JudgeOptions(batch_size=2)).judged == 4


def test_backend_failure_raises_after_keeping_stored_batches(tmp_path: Path) -> None:
    make_pool(tmp_path, 6)
    backend = Scripted([], fail_on=2)
    with pytest.raises(BackendError, match="server went away"):
        run_judge(tmp_path, lambda: backend, TEMPLATE, JudgeOptions(batch_size=2))
    assert backend.closed and len(sidecar(tmp_path)) == 2
    assert not Pool(tmp_path).lock_holder()  # the lock was released


def test_wrong_number_of_completions_is_a_backend_error(tmp_path: Path) -> None:
    make_pool(tmp_path, 2)
    with pytest.raises(BackendError, match="returned 1 completions for 2 prompts"):
        run_judge(tmp_path, lambda: Scripted([], short=True), TEMPLATE, JudgeOptions())


def test_torn_and_foreign_sidecar_lines_are_skipped(tmp_path: Path) -> None:
    make_pool(tmp_path, 3)
    good = {"id": machine_task_id(0), "instruction": "Describe thing number 0 in detail.",
            **Judgement(4, "", "scripted", TEMPLATE.fingerprint(), "t").to_dict()}  # fmt: skip
    orphan = json.dumps({**good, "id": "machine_task_999999"})
    (tmp_path / "judgements.jsonl").write_text(json.dumps(good) + "\n" + '{"hello": 1}\n' + orphan + '\n{"id": "mach')
    outcome = run_judge(tmp_path, lambda: Scripted([]), TEMPLATE, JudgeOptions())
    assert outcome.already == 1 and outcome.judged == 2 and outcome.orphans == 1
    assert any("not judgements" in w for w in outcome.warnings)
    assert any("not in the pool" in w for w in outcome.warnings)
    lines = (tmp_path / "judgements.jsonl").read_text().splitlines()
    assert lines[3] == '{"id": "mach'  # the torn line was ended, not glued to the next one
    assert [json.loads(line)["id"] for line in lines[4:]] == [machine_task_id(1), machine_task_id(2)]


def test_locked_pool_is_refused_before_the_backend_starts(tmp_path: Path) -> None:
    pool = make_pool(tmp_path, 2)
    started: list[int] = []

    def factory() -> Backend:
        started.append(1)
        return Scripted([])

    with pool.lock("generate"), pytest.raises(PoolLockedError, match="locked by pid"):
        run_judge(tmp_path, factory, TEMPLATE, JudgeOptions())
    assert not started


@pytest.mark.parametrize("setup", ["missing", "file", "empty-dir"])
def test_not_a_pool(tmp_path: Path, setup: str) -> None:
    target = tmp_path / "pool"
    if setup == "file":
        target.write_text("x")
    elif setup == "empty-dir":
        target.mkdir()
    with pytest.raises(InputError, match=str(target)):
        run_judge(target, lambda: Scripted([]), TEMPLATE, JudgeOptions())


def test_corrupt_pool_is_a_pool_error(tmp_path: Path) -> None:
    make_pool(tmp_path, 2)
    with (tmp_path / "tasks.jsonl").open("a") as fh:
        fh.write("not json\n")
    make_line = Task("Another task for the pool here.", [Instance("", "x")], False, machine_task_id(5))
    with (tmp_path / "tasks.jsonl").open("a") as fh:
        fh.write(json.dumps(make_line.to_record()) + "\n")
    with pytest.raises(PoolError, match=r"tasks.jsonl:3"):
        run_judge(tmp_path, lambda: Scripted([]), TEMPLATE, JudgeOptions())


def test_full_disk_on_append_is_a_pool_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import selfinstruct.pool.journal as pool_module

    make_pool(tmp_path, 4)
    real = pool_module._write
    calls = {"n": 0}

    def flaky(fd: int, data: Any) -> int:
        calls["n"] += bytes(data[:7]) == b'{"id": '  # count the writes of judgement lines only
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(pool_module, "_write", flaky)
    with pytest.raises(PoolError, match=r"could not record judgements .*No space left"):
        run_judge(tmp_path, lambda: Scripted([]), TEMPLATE, JudgeOptions(batch_size=2))
    assert len(sidecar(tmp_path)) == 2  # the first batch; the failed one was undone whole
