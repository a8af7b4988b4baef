"""End-to-end tests of ``selfinstruct generate`` against a real OpenAI-compatible server on 127.0.0.1.

The server (:mod:`fakelm`) answers with :class:`paperlm.PaperLM`, which replies in the paper's shapes and
makes a base model's typical mess, so every stage of the loop and every rejection path runs for real.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fakelm import FakeLM
from paperlm import PaperLM
from rouge_score import rouge_scorer
from seedsets import write_alpaca_seeds, write_seeds
from typer.testing import CliRunner

from selfinstruct.cli import app
from selfinstruct.config import GenerateConfig
from selfinstruct.engines import Completion, Sampling
from selfinstruct.loop.bootstrap import Bootstrap
from selfinstruct.loop.runner import looks_instruct
from selfinstruct.pool.directory import Pool
from selfinstruct.pool.task import load_seed_tasks
from selfinstruct.protocol.prompts import PromptTemplates

PROMPTS = Path(__file__).resolve().parents[1] / "prompts"


@pytest.fixture
def paper_lm() -> Any:
    with FakeLM(respond=PaperLM()) as lm:
        yield lm


@pytest.fixture
def seeds(tmp_path: Path) -> Path:
    return write_seeds(tmp_path / "seeds.jsonl")


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def gen(lm: FakeLM, seeds: Path, out: Path, *extra: str) -> Any:
    return run_cli(
        "generate", "--base-url", lm.base_url, "--seeds", str(seeds), "--out", str(out),
        "--prompts", str(PROMPTS), "--batch-size", "3", *extra,
    )  # fmt: skip


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_pool_reaches_target_with_instances_and_provenance(paper_lm: FakeLM, seeds: Path, tmp_path: Path) -> None:
    out = tmp_path / "pool"
    result = gen(paper_lm, seeds, out, "--num-instructions", "25", "--seed", "7")
    assert result.exit_code == 0, result.output
    tasks = read_jsonl(out / "tasks.jsonl")
    assert len(tasks) == 25
    assert [t["id"] for t in tasks] == [f"machine_task_{i:06d}" for i in range(25)]
    assert len({t["instruction"] for t in tasks}) == 25
    for task in tasks:
        assert task["instances"] and all(inst["output"].strip() for inst in task["instances"])
        assert len(task["instances"]) <= 5
        assert task["source"] == "machine" and task["model"] == "fake-model"
        assert isinstance(task["is_classification"], bool)
        assert {"run_id", "round", "created_at", "max_similarity", "most_similar", "demonstrations"} <= task.keys()
        assert 0 <= task["max_similarity"] <= 0.7
    assert "target_reached" in result.output
    # Provenance is exact: the recorded neighbours carry rouge-score's own floats, and nothing among the seeds
    # or the tasks of earlier rounds is more similar than the recorded maximum.
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    seed_texts = [t.instruction for t in load_seed_tasks(seeds)]
    for task in tasks:
        top = task["most_similar"][0]
        assert top["score"] == task["max_similarity"]
        assert top["score"] == scorer.score(task["instruction"], top["instruction"])["rougeL"].fmeasure
        earlier = seed_texts + [t["instruction"] for t in tasks if t["round"] < task["round"]]
        brute = max(scorer.score(task["instruction"], e)["rougeL"].fmeasure for e in earlier)
        assert brute <= task["max_similarity"]
    # Classification tasks got output-first instances whose outputs are labels.
    clf = [t for t in tasks if t["is_classification"]]
    assert clf and all(t["instance_format"] == "output_first" for t in clf)
    assert {i["output"] for t in clf for i in t["instances"]} <= {"Alpha", "Beta", "Gamma"}


def test_rejections_are_counted_by_reason_and_written(paper_lm: FakeLM, seeds: Path, tmp_path: Path) -> None:
    out = tmp_path / "pool"
    assert gen(paper_lm, seeds, out, "--num-instructions", "15", "--seed", "1").exit_code == 0
    (run,) = read_jsonl(out / "runs.jsonl")
    assert run["exit_reason"] == "target_reached"
    assert {"too_short", "blocked_keyword", "demo_copy"} <= run["rejected"].keys()
    # No --window: the lag comes from the budget (15 tasks at 2 a request, 3/4 of that, at least 8); recorded.
    assert run["config"]["window"] is None and run["lag"] == 8
    rejected = read_jsonl(out / "rejected.jsonl")
    copies = [r for r in rejected if r["reject_reason"] == "demo_copy"]
    assert copies and all(r["demonstration"] == r["instruction"] for r in copies)
    # Every candidate is accounted for: accepted, rejected by reason, or surplus/unfinished (paid-for work
    # beyond the target, written out with its instances when it has them).
    assert Counter(r["reject_reason"] for r in rejected) == Counter(run["rejected"]) + Counter(run["surplus"])
    assert run["candidates"] == run["accepted"] + sum(run["rejected"].values()) + sum(run["surplus"].values())
    assert all(r["instances"] for r in rejected if r["reject_reason"] == "surplus")
    similar = [r for r in rejected if r["reject_reason"] == "too_similar"]
    assert all(r["max_similarity"] > 0.7 and r["most_similar"] for r in similar)
    keyword = [r for r in rejected if r["reject_reason"] == "blocked_keyword"]
    assert all(r["keyword"] == "picture" for r in keyword)
    # Cut-off lists lost their last item and nothing else.
    assert run["notes"].get("cut_off", 0) > 0
    tasks = read_jsonl(out / "tasks.jsonl")
    assert not any("differ" in t["instruction"] for t in tasks)


def test_a_fixed_window_is_the_recorded_lag(paper_lm: FakeLM, seeds: Path, tmp_path: Path) -> None:
    out = tmp_path / "pool"
    result = gen(paper_lm, seeds, out, "--num-instructions", "6", "--seed", "1", "--window", "3")
    assert result.exit_code == 0 and "window 3;" in result.output
    (run,) = read_jsonl(out / "runs.jsonl")
    assert run["config"]["window"] == 3 and run["lag"] == 3


def test_resume_continues_ids_without_duplicates(paper_lm: FakeLM, seeds: Path, tmp_path: Path) -> None:
    out = tmp_path / "pool"
    assert gen(paper_lm, seeds, out, "--num-instructions", "10", "--seed", "3").exit_code == 0
    first = (out / "tasks.jsonl").read_bytes()
    # The same seed again: the pool state differs, so the prompts differ and the run goes on.
    assert gen(paper_lm, seeds, out, "--num-instructions", "22", "--seed", "3").exit_code == 0
    assert (out / "tasks.jsonl").read_bytes().startswith(first)
    tasks = read_jsonl(out / "tasks.jsonl")
    assert len(tasks) == 22
    assert [t["id"] for t in tasks] == [f"machine_task_{i:06d}" for i in range(22)]
    assert len({t["instruction"].lower() for t in tasks}) == 22
    runs = read_jsonl(out / "runs.jsonl")
    assert [r["pool_before"] for r in runs] == [0, 10]
    rounds = [t["round"] for t in tasks]
    assert rounds == sorted(rounds) and min(t["round"] for t in tasks[10:]) > max(t["round"] for t in tasks[:10])
    # A third run at the target does nothing and says so.
    result = gen(paper_lm, seeds, out, "--num-instructions", "22")
    assert result.exit_code == 0 and "target_reached" in result.output
    assert len(read_jsonl(out / "tasks.jsonl")) == 22


def test_bad_seed_file_names_the_line_and_writes_nothing(paper_lm: FakeLM, tmp_path: Path) -> None:
    bad = tmp_path / "seeds.jsonl"
    bad.write_text('{"instruction": "Name three rivers in Africa.", "instances": []}\n{"instances": []}\n')
    out = tmp_path / "pool"
    result = gen(paper_lm, bad, out, "--num-instructions", "5")
    assert result.exit_code == 2
    assert f"{bad}:2: missing field 'instruction'" in result.output
    assert not out.exists()
    assert paper_lm.completion_requests == 0


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "holds no tasks"),
        ("not json\n", ":1: not valid JSON"),
        ('{"instruction": "Say something kind.", "output": 5}\n', ":1: field 'output' must be a string"),
    ],
)
def test_bad_seed_files(paper_lm: FakeLM, tmp_path: Path, content: str, expected: str) -> None:
    bad = tmp_path / "seeds.jsonl"
    bad.write_text(content)
    result = gen(paper_lm, bad, tmp_path / "pool", "--num-instructions", "5")
    assert result.exit_code == 2 and expected in result.output
    assert not (tmp_path / "pool").exists()


def test_alpaca_seeds_load_and_run(paper_lm: FakeLM, tmp_path: Path) -> None:
    seeds = write_alpaca_seeds(tmp_path / "alpaca.json")
    out = tmp_path / "pool"
    result = gen(paper_lm, seeds, out, "--num-instructions", "6", "--seed", "2")
    assert result.exit_code == 0, result.output
    assert "no seed task is marked is_classification" in result.output
    tasks = read_jsonl(out / "tasks.jsonl")
    assert len(tasks) == 6 and not any(t["is_classification"] for t in tasks)


def test_original_seed_schema_loads(tmp_path: Path) -> None:
    # The shape of the original repository's seed file, field for field (our own text).
    path = tmp_path / "seed_tasks.jsonl"
    path.write_text(
        json.dumps(
            {
                "id": "seed_task_0",
                "name": "weekend_chores",
                "instruction": "Plan a weekend of chores for two flatmates.",
                "instances": [{"input": "", "output": "Saturday: laundry and bathroom. Sunday: shopping."}],
                "is_classification": False,
            }
        )
        + "\n"
    )
    (task,) = load_seed_tasks(path)
    assert task.id == "seed_task_0" and task.name == "weekend_chores" and task.is_classification is False


def test_budgets_end_the_run_with_reason(paper_lm: FakeLM, seeds: Path, tmp_path: Path) -> None:
    out = tmp_path / "pool"
    result = gen(paper_lm, seeds, out, "--num-instructions", "1000", "--max-rounds", "2")
    assert result.exit_code == 0 and "max_rounds" in result.output
    result = gen(paper_lm, seeds, out, "--num-instructions", "1000", "--max-new", "4")
    assert result.exit_code == 0 and "max_new" in result.output
    runs = read_jsonl(out / "runs.jsonl")
    assert [r["exit_reason"] for r in runs] == ["max_rounds", "max_new"]
    assert runs[0]["rounds"] == 2 and runs[1]["accepted"] == 4


def test_saturation_stops_a_model_that_only_repeats(seeds: Path, tmp_path: Path) -> None:
    def parrot(prompt: str, body: dict[str, Any]) -> tuple[str, str]:
        # Repeat the first demonstration of the list: always too similar.
        first = prompt.split("\n1. ", 1)[1].split("\n", 1)[0]
        return f" {first}\n", "stop"

    with FakeLM(respond=parrot) as lm:
        result = gen(lm, seeds, tmp_path / "pool", "--num-instructions", "50", "--config", str(_toml(tmp_path)))
    assert result.exit_code == 0, result.output
    assert "saturated" in result.output
    (run,) = read_jsonl(tmp_path / "pool" / "runs.jsonl")
    assert run["rounds"] == 3 and run["accepted"] == 0


def _toml(tmp_path: Path) -> Path:
    path = tmp_path / "selfinstruct.toml"
    path.write_text("saturation-window = 3\nsaturation_min_rate = 0.05\n[generate]\nbatch_size = 2\n")
    return path


def test_garbage_model_output_is_counted_not_fatal(seeds: Path, tmp_path: Path) -> None:
    def garbage(prompt: str, body: dict[str, Any]) -> tuple[str, str]:
        return random.Random(prompt).choice(["", "\x00\x01", "}{][", "9. 9. 9.", "Output: Input:"]), "stop"

    with FakeLM(respond=garbage) as lm:
        result = gen(lm, seeds, tmp_path / "pool", "--num-instructions", "5", "--config", str(_toml(tmp_path)))
    assert result.exit_code == 0, result.output
    assert "saturated" in result.output
    assert Pool(tmp_path / "pool").read_tasks() == []


def test_dead_server_fails_clearly_and_is_recorded(seeds: Path, tmp_path: Path) -> None:
    with FakeLM() as lm:
        url = lm.base_url  # the server stops at the end of the block: nothing listens there any more
    result = run_cli(
        "generate", "--base-url", url, "--model", "m", "--seeds", str(seeds), "--out", str(tmp_path / "pool"),
        "--prompts", str(PROMPTS), "--config", str(_retry_toml(tmp_path)),
    )  # fmt: skip
    assert result.exit_code == 3, result.output
    assert "127.0.0.1" in result.output and "Traceback" not in result.output
    (run,) = read_jsonl(tmp_path / "pool" / "runs.jsonl")
    assert run["exit_reason"] == "error" and run["error"]


def _retry_toml(tmp_path: Path) -> Path:
    path = tmp_path / "retry.toml"
    path.write_text("max_retries = 1\ntimeout = 5\n")
    return path


def test_pool_made_with_another_model_is_refused_unless_forced(seeds: Path, tmp_path: Path) -> None:
    out = tmp_path / "pool"
    with FakeLM(respond=PaperLM(), models=["model-a"]) as lm:
        assert gen(lm, seeds, out, "--num-instructions", "3").exit_code == 0
    with FakeLM(respond=PaperLM(), models=["model-b"]) as lm:
        refused = gen(lm, seeds, out, "--num-instructions", "6")
        assert refused.exit_code == 4
        assert "model: stored 'model-a', now 'model-b'" in refused.output
        forced = gen(lm, seeds, out, "--num-instructions", "6", "--force")
        assert forced.exit_code == 0, forced.output
    assert len(read_jsonl(out / "tasks.jsonl")) == 6


def test_locked_pool_exits_75_naming_the_holder(paper_lm: FakeLM, seeds: Path, tmp_path: Path) -> None:
    pool = Pool(tmp_path / "pool")
    with pool.lock("generate"):
        result = gen(paper_lm, seeds, tmp_path / "pool", "--num-instructions", "3")
    assert result.exit_code == 75
    assert "pid" in result.output and str(__import__("os").getpid()) in result.output


def test_plain_lines_without_a_terminal(paper_lm: FakeLM, seeds: Path, tmp_path: Path) -> None:
    result = gen(paper_lm, seeds, tmp_path / "pool", "--num-instructions", "8", "--seed", "5")
    lines = result.output.splitlines()
    assert any(line.split(" ", 1)[1].startswith("round 1:") for line in lines if line[:4].isdigit())
    assert lines[-1].split(" ", 1)[1].startswith("selfinstruct generate: target_reached;")
    quiet = gen(paper_lm, seeds, tmp_path / "pool2", "--num-instructions", "8", "--quiet")
    assert quiet.output.count("\n") == 1 and "selfinstruct generate:" in quiet.output


def test_same_seed_and_pool_replay_the_same_pool(seeds: Path, tmp_path: Path) -> None:
    pools = []
    for name in ("a", "b"):
        with FakeLM(respond=PaperLM()) as lm:
            assert gen(lm, seeds, tmp_path / name, "--num-instructions", "12", "--seed", "11").exit_code == 0
        pools.append(comparable(read_jsonl(tmp_path / name / "tasks.jsonl")))
    assert pools[0] == pools[1]


def test_replay_holds_when_the_server_answers_in_random_order_and_time(seeds: Path, tmp_path: Path) -> None:
    pools, orders = [], []
    for name, jitter in (("a", 1), ("b", 2), ("c", None)):
        timing = (0.0, 0.03) if jitter is not None else None
        with FakeLM(respond=PaperLM(), jitter=timing, jitter_seed=jitter or 0) as lm:
            result = gen(lm, seeds, tmp_path / name, "--num-instructions", "30", "--seed", "4", "--window", "4")
            assert result.exit_code == 0, result.output
            orders.append(lm.answered)
        pools.append(comparable(read_jsonl(tmp_path / name / "tasks.jsonl")))
    assert pools[0] == pools[1] == pools[2]
    assert orders[0] != orders[1]  # the timing really differed
    assert any(set(t["demonstrations"]) & {u["instruction"] for u in pools[0]} for t in pools[0])


def comparable(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tasks without what differs between two runs by nature: run ids and timestamps."""
    return [{k: v for k, v in t.items() if k not in ("run_id", "created_at")} for t in tasks]


def test_config_file_and_flags(paper_lm: FakeLM, seeds: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'num-instructions = 4\nseed = 9\nout = "{tmp_path / "from_toml"}"\n')
    result = gen(paper_lm, seeds, tmp_path / "from_flag", "--config", str(cfg))
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "from_toml").exists()  # --out on the command line wins
    (run,) = read_jsonl(tmp_path / "from_flag" / "runs.jsonl")
    assert run["seed"] == 9 and run["target"] == 4
    bad = tmp_path / "bad.toml"
    bad.write_text("num-instruction = 4\n")
    result = gen(paper_lm, seeds, tmp_path / "x", "--config", str(bad))
    assert result.exit_code == 2 and "did you mean 'num-instructions'" in result.output


def test_status_and_export(paper_lm: FakeLM, seeds: Path, tmp_path: Path) -> None:
    out = tmp_path / "pool"
    assert gen(paper_lm, seeds, out, "--num-instructions", "6").exit_code == 0
    status = run_cli("status", str(out), "--json")
    report = json.loads(status.output)
    assert report["pool_size"] == 6 and report["target"] == 6 and report["lock_holder"] is None
    assert report["runs"][-1]["exit_reason"] == "target_reached"
    assert 0 < report["runs"][-1]["acceptance_rate"] <= 1
    assert run_cli("status", str(out)).exit_code == 0
    alpaca = tmp_path / "alpaca.json"
    assert run_cli("export", str(out), "--out", str(alpaca), "--format", "alpaca").exit_code == 0
    records = json.loads(alpaca.read_text())
    assert records and set(records[0]) == {"instruction", "input", "output"}
    sharegpt = tmp_path / "sharegpt.jsonl"
    assert run_cli("export", str(out), "--out", str(sharegpt), "--format", "sharegpt").exit_code == 0
    assert read_jsonl(sharegpt)[0]["conversations"][0]["from"] == "human"


def test_bootstrap_round_with_an_in_process_backend(tmp_path: Path) -> None:
    """The loop as a library: a backend is any object with ``generate``; nothing is printed or written."""
    lm = PaperLM(cut_every=0)

    class Scripted:
        model = "scripted"

        def __init__(self) -> None:
            self.calls: list[tuple[list[str], Sampling]] = []

        def generate(self, prompts: Any, sampling: Sampling, seeds: Any = None) -> list[Completion]:
            self.calls.append((list(prompts), sampling))
            return [Completion(*lm(p, {"seed": s})) for p, s in zip(prompts, seeds, strict=True)]

    backend = Scripted()
    seeds = load_seed_tasks(write_seeds(tmp_path / "seeds.jsonl"))
    cfg = GenerateConfig(num_instructions=5, batch_size=2, seeds=str(tmp_path / "seeds.jsonl"))
    loop = Bootstrap(cfg, backend, seeds, [], PromptTemplates.load(PROMPTS), rng=random.Random(0), run_id="test")
    reports = list(loop.rounds())
    assert loop.stop_reason == "target_reached"
    assert sum(len(r.accepted) for r in reports) == 5
    # Stages in order per round: instructions, classification, instances; sampling per stage as configured.
    first_round = backend.calls[:3]
    assert [c[1].max_tokens for c in first_round] == [1024, 3, 350]
    assert first_round[0][1].temperature == 0.7 and first_round[0][1].presence_penalty == 2.0
    assert all(p.endswith("\n9.") for p in first_round[0][0])
    assert all(p.endswith("Is it classification?") for p in first_round[1][0])


# -- instruct models, the Alpaca method and the judge ------------------------------------------------------


def accounted(run: dict[str, Any]) -> bool:
    """Every candidate of the run is accepted, rejected by reason, or surplus/unfinished."""
    return run["candidates"] == run["accepted"] + sum(run["rejected"].values()) + sum(run["surplus"].values())


def test_chat_model_grows_a_pool(paper_lm: FakeLM, seeds: Path, tmp_path: Path) -> None:
    out = tmp_path / "pool"
    result = gen(paper_lm, seeds, out, "--api", "chat", "--num-instructions", "12", "--seed", "3")
    assert result.exit_code == 0, result.output
    tasks = read_jsonl(out / "tasks.jsonl")
    assert len(tasks) == 12 and all(t["instances"] for t in tasks)
    assert not any("**" in t["instruction"] or "**" in i["output"] for t in tasks for i in t["instances"])
    assert not any("Let me know" in i["output"] for t in tasks for i in t["instances"])
    assert {t["instance_format"] for t in tasks} <= {"input_first", "output_first"}
    assert paper_lm.chat_requests and not paper_lm.requests  # no completions request, not even a probe
    (run,) = read_jsonl(out / "runs.jsonl")
    assert run["api"] == "chat" and accounted(run)
    assert {"too_short", "blocked_keyword", "demo_copy"} <= run["rejected"].keys()
    assert run["notes"]["chatter"] > 0
    assert json.loads((out / "config.json").read_text())["api"] == "chat"


def test_chat_on_a_vllm_server_continues_a_prefilled_reply(seeds: Path, tmp_path: Path) -> None:
    """--chat-form auto on a server that says it is vLLM: the demonstrations open the assistant's reply, which
    the model continues; the form is recorded and is part of the pool's identity."""
    out = tmp_path / "pool"
    with FakeLM(respond=PaperLM(), owned_by="vllm") as lm:
        result = gen(lm, seeds, out, "--api", "chat", "--num-instructions", "6", "--seed", "3")
        assert result.exit_code == 0, result.output
        listing = [b for b in lm.chat_requests if b.get("continue_final_message")]
        assert listing and all(b["add_generation_prompt"] is False for b in listing)
        assert all([m["role"] for m in b["messages"]] == ["user", "assistant"] for b in listing)
        assert all(b["messages"][-1]["content"].endswith("\n9.") for b in listing)
        for body in listing:  # the reply ends where it would re-list a (long enough) demonstration
            shown = [line.split(". ", 1)[1] for line in body["messages"][-1]["content"].splitlines()[:-1]]
            long = [text.rstrip(" .!?;:") for text in shown if len(text.rstrip(" .!?;:")) >= 24]
            # the loop's own stop first, then the first demonstrations: a server takes 4 stop strings at most
            assert body["stop"] == ["\n17.", *long[:3]], (long, body["stop"])
        (run,) = read_jsonl(out / "runs.jsonl")
        assert run["config"]["chat_form"] == "prefill" and run["accepted"] == 6 and accounted(run)
        assert json.loads((out / "config.json").read_text())["config"]["chat_form"] == "prefill"
        refused = gen(lm, seeds, out, "--api", "chat", "--chat-form", "ask", "--num-instructions", "9")
        assert refused.exit_code == 4 and "prompts_hash" in refused.output
        resumed = gen(lm, seeds, out, "--api", "chat", "--num-instructions", "9")
        assert resumed.exit_code == 0, resumed.output


@pytest.mark.parametrize(("owner", "form", "expected"), [("fakelm", "auto", "ask"), ("vllm", "ask", "ask"),
                                                         ("fakelm", "prefill", "prefill")])  # fmt: skip
def test_chat_form_follows_the_server_unless_given(
    seeds: Path, tmp_path: Path, owner: str, form: str, expected: str
) -> None:
    with FakeLM(respond=PaperLM(), owned_by=owner) as lm:
        result = gen(lm, seeds, tmp_path / "pool", "--api", "chat", "--chat-form", form, "--num-instructions", "3")
        assert result.exit_code == 0, result.output
        prefilled = [b for b in lm.chat_requests if b.get("continue_final_message")]
        stopped_at_copies = [
            b for b in lm.chat_requests if any(len(s) >= 24 and s in str(b["messages"]) for s in b.get("stop") or [])
        ]
    assert bool(prefilled) is (expected == "prefill")
    assert bool(stopped_at_copies) is (expected == "prefill")  # demonstrations as stop strings: prefill only
    (run,) = read_jsonl(tmp_path / "pool" / "runs.jsonl")
    assert run["config"]["chat_form"] == expected


def test_prefill_without_its_template_is_a_config_error(paper_lm: FakeLM, seeds: Path, tmp_path: Path) -> None:
    import shutil

    prompts = tmp_path / "prompts"
    shutil.copytree(PROMPTS, prompts)
    (prompts / "chat" / "instruction_prefill.txt").unlink()
    args = ("--api", "chat", "--num-instructions", "3", "--prompts", str(prompts))
    refused = gen(paper_lm, seeds, tmp_path / "pool", *args, "--chat-form", "prefill")
    assert refused.exit_code == 2 and "instruction_prefill.txt: prompt template missing" in refused.output
    with FakeLM(respond=PaperLM(), owned_by="vllm") as lm:
        asked = gen(lm, seeds, tmp_path / "other", *args)  # auto: the ask form, as the template is missing
        assert asked.exit_code == 0, asked.output
        assert not any(b.get("continue_final_message") for b in lm.chat_requests)


def test_auto_detects_a_chat_only_server(seeds: Path, tmp_path: Path) -> None:
    with FakeLM(respond=PaperLM(), apis=("chat",)) as lm:
        result = gen(lm, seeds, tmp_path / "pool", "--num-instructions", "5", "--seed", "1")
    assert result.exit_code == 0, result.output
    assert "--api auto: using the chat API" in result.output
    (run,) = read_jsonl(tmp_path / "pool" / "runs.jsonl")
    assert run["api"] == "chat" and run["accepted"] == 5


def test_auto_keeps_completions_and_hints_at_an_instruct_name(seeds: Path, tmp_path: Path) -> None:
    with FakeLM(respond=PaperLM(), models=["org/Tiny-7B-Instruct"]) as lm:
        result = gen(lm, seeds, tmp_path / "pool", "--num-instructions", "3", "--seed", "1")
    assert result.exit_code == 0, result.output
    assert "looks like an instruct model; --api chat" in result.output
    (run,) = read_jsonl(tmp_path / "pool" / "runs.jsonl")
    assert run["api"] == "completions"


@pytest.mark.parametrize(
    ("model", "instruct"),
    [
        ("meta-llama/Llama-3.1-8B-Instruct", True),
        ("mistralai/Mistral-7B-Instruct-v0.3", True),
        ("google/gemma-2-9b-it", True),
        ("HuggingFaceH4/zephyr-7b-sft-full", True),
        ("allenai/tulu-2-dpo-70b", True),
        ("THUDM/chatglm3-6b", True),
        ("/models/Qwen2.5-7B-Instruct/", True),
        ("meta-llama/Llama-3.1-8B", False),
        ("google/gemma-3-270m", False),
        ("/root/.cache/selfinstruct/models/gemma-3-270m", False),  # the folders do not count
        ("/data/chat-models/gpt2", False),
        ("EleutherAI/pythia-2.8b", False),
        ("tiiuae/falcon-7b-italian", False),
        ("", False),
    ],
)
def test_an_instruct_name_is_read_from_the_last_part_of_the_model(model: str, instruct: bool) -> None:
    assert looks_instruct(model) is instruct


def test_the_api_is_part_of_the_pool_identity(paper_lm: FakeLM, seeds: Path, tmp_path: Path) -> None:
    out = tmp_path / "pool"
    assert gen(paper_lm, seeds, out, "--api", "chat", "--num-instructions", "3").exit_code == 0
    refused = gen(paper_lm, seeds, out, "--api", "completions", "--num-instructions", "6")
    assert refused.exit_code == 4 and "api: stored 'chat', now 'completions'" in refused.output
    resumed = gen(paper_lm, seeds, out, "--num-instructions", "6")  # auto: the pool's own API
    assert resumed.exit_code == 0, resumed.output
    assert [r["api"] for r in read_jsonl(out / "runs.jsonl")][-1] == "chat"


def test_an_old_pool_without_method_and_api_is_self_instruct_on_completions(
    paper_lm: FakeLM, seeds: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pool"
    assert gen(paper_lm, seeds, out, "--num-instructions", "3", "--api", "completions").exit_code == 0
    stored = json.loads((out / "config.json").read_text())
    del stored["api"], stored["method"]
    (out / "config.json").write_text(json.dumps(stored))
    assert gen(paper_lm, seeds, out, "--num-instructions", "6").exit_code == 0
    refused = gen(paper_lm, seeds, out, "--num-instructions", "9", "--method", "alpaca")
    assert refused.exit_code == 4 and "method" in refused.output


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_alpaca_method_grows_a_pool_of_complete_tasks(paper_lm: FakeLM, seeds: Path, tmp_path: Path, api: str) -> None:
    out = tmp_path / "pool"
    result = gen(paper_lm, seeds, out, "--method", "alpaca", "--api", api, "--num-instructions", "15", "--seed", "2")
    assert result.exit_code == 0, result.output
    tasks = read_jsonl(out / "tasks.jsonl")
    assert len(tasks) == 15
    for task in tasks:
        assert task["method"] == "alpaca" and task["instance_format"] == "alpaca"
        assert task["is_classification"] is None and len(task["instances"]) == 1
        assert task["instances"][0]["output"].strip() and "<none>" not in task["instances"][0]["input"]
        assert len(task["demonstrations"]) == 3
    assert any(t["instances"][0]["input"] for t in tasks) and any(not t["instances"][0]["input"] for t in tasks)
    (run,) = read_jsonl(out / "runs.jsonl")
    assert run["method"] == "alpaca" and accounted(run)
    assert {"demo_copy", "blocked_keyword"} <= run["rejected"].keys()
    assert run["notes"]["unparseable_task"] > 0
    assert run["stages"]["classification"]["requests"] == run["stages"]["instances"]["requests"] == 0
    # One request gives several tasks: far fewer requests per accepted task than Self-Instruct's three or more.
    assert run["stages"]["instructions"]["requests"] < 15


def test_judge_on_the_same_engine_with_a_bar(paper_lm: FakeLM, seeds: Path, tmp_path: Path) -> None:
    out = tmp_path / "pool"
    result = gen(paper_lm, seeds, out, "--judge-model", "same", "--min-score", "3", "--num-instructions", "10",
                 "--seed", "5")  # fmt: skip
    assert result.exit_code == 0, result.output
    tasks = read_jsonl(out / "tasks.jsonl")
    assert len(tasks) == 10
    assert all(t["judge"]["score"] >= 3 and t["judge"]["model"] == "fake-model" for t in tasks)
    (run,) = read_jsonl(out / "runs.jsonl")
    assert {"low_score", "no_score"} <= run["rejected"].keys() and accounted(run)
    assert run["judge"]["shares_engine"] is True and run["judge"]["min_score"] == 3
    assert run["notes"]["unscored_judgement"] == run["rejected"]["no_score"]
    judged = [r for r in read_jsonl(out / "rejected.jsonl") if r["reject_reason"] == "low_score"]
    assert judged and all(r["judge"]["score"] < 3 and r["instances"] for r in judged)
    assert any(p.endswith("\nScore:") for p in paper_lm.answered)  # the judge's requests went to the same server


def test_judge_without_a_bar_keeps_every_task_and_its_score(paper_lm: FakeLM, seeds: Path, tmp_path: Path) -> None:
    out = tmp_path / "pool"
    assert gen(paper_lm, seeds, out, "--judge-model", "fake-model", "--num-instructions", "8").exit_code == 0
    tasks = read_jsonl(out / "tasks.jsonl")
    assert (all("judge" in t for t in tasks) and any(t["judge"]["score"] is None for t in tasks)) or tasks
    (run,) = read_jsonl(out / "runs.jsonl")
    assert "low_score" not in run["rejected"] and run["stages"]["judge"]["requests"] >= 8


def test_judge_on_its_own_server(seeds: Path, tmp_path: Path) -> None:
    with (
        FakeLM(respond=PaperLM()) as gen_lm,
        FakeLM(respond=PaperLM(), models=["judge-9b"], apis=("chat",)) as judge_lm,
    ):
        result = gen(gen_lm, seeds, tmp_path / "pool", "--judge-model", "judge-9b", "--judge-base-url",
                     judge_lm.base_url, "--min-score", "2", "--num-instructions", "6")  # fmt: skip
        assert result.exit_code == 0, result.output
        assert not any(p.endswith("\nScore:") for p in gen_lm.answered)
        assert judge_lm.chat_requests and all("Answer in two lines" in r["messages"][0]["content"]
                                              for r in judge_lm.chat_requests)  # fmt: skip
    tasks = read_jsonl(tmp_path / "pool" / "tasks.jsonl")
    assert all(t["judge"]["model"] == "judge-9b" and t["judge"]["score"] >= 2 for t in tasks)
    (run,) = read_jsonl(tmp_path / "pool" / "runs.jsonl")
    assert run["judge"]["shares_engine"] is False and run["judge"]["api"] == "chat"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--min-score", "3"], "--min-score needs a judge: give --judge-model too"),
        (["--judge-base-url", "http://127.0.0.1:1/v1"], "--judge-base-url needs --judge-model"),
        (["--judge-model", "x", "--min-score", "6"], "--min-score must be between 1 and 5"),
        (["--method", "magic"], "--method must be one of self-instruct, alpaca"),
        (["--api", "grpc"], "--api must be one of auto, chat, completions"),
        (["--alpaca-count", "0"], "--alpaca-count must be between 1 and 200"),
    ],
)
def test_bad_new_options(paper_lm: FakeLM, seeds: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = gen(paper_lm, seeds, tmp_path / "pool", *args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "pool").exists()


def test_in_process_judge_of_another_model_is_refused(seeds: Path, tmp_path: Path, monkeypatch: Any) -> None:
    from selfinstruct.loop.runner import run_generate

    class Fake:
        model = "gen"

        def generate(self, prompts: Any, sampling: Any, seeds: Any = None) -> list[Completion]:
            return [Completion("", "stop") for _ in prompts]

    config = GenerateConfig(seeds=str(seeds), out=str(tmp_path / "pool"), judge_model="other", max_rounds=1)
    monkeypatch.setattr("selfinstruct.loop.runner.make_backend", lambda name, options: Fake())
    from selfinstruct.errors import ConfigError

    with pytest.raises(ConfigError, match="in-process vLLM runs one model"):
        run_generate(config)


def test_replay_holds_for_alpaca_with_a_judge_under_shuffled_timing(seeds: Path, tmp_path: Path) -> None:
    pools = []
    for i in range(2):
        with FakeLM(respond=PaperLM(), jitter=(0.0, 0.01), jitter_seed=i) as lm:
            out = tmp_path / f"pool{i}"
            result = gen(lm, seeds, out, "--method", "alpaca", "--judge-model", "same", "--min-score", "2",
                         "--num-instructions", "12", "--seed", "9")  # fmt: skip
            assert result.exit_code == 0, result.output
        pools.append([(t["instruction"], t["instances"], t["judge"]["score"]) for t in read_jsonl(out / "tasks.jsonl")])
    assert pools[0] == pools[1]


def test_judge_command_scores_a_pool_resumably(paper_lm: FakeLM, seeds: Path, tmp_path: Path) -> None:
    out = tmp_path / "pool"
    assert gen(paper_lm, seeds, out, "--num-instructions", "9").exit_code == 0
    first = run_cli("judge", str(out), "--base-url", paper_lm.base_url, "--prompts", str(PROMPTS), "--limit", "4")
    assert first.exit_code == 0, first.output
    assert "judging 4 of 9 tasks with fake-model (completions; 0 already scored" in first.output
    assert "limit: judged 4 tasks" in first.output
    second = run_cli("judge", str(out), "--base-url", paper_lm.base_url, "--prompts", str(PROMPTS))
    assert "judging 5 of 9 tasks" in second.output and "done: judged 5 tasks" in second.output
    third = run_cli("judge", str(out), "--base-url", paper_lm.base_url, "--prompts", str(PROMPTS))
    assert "judging 0 of 9 tasks" in third.output
    assert len(read_jsonl(out / "judgements.jsonl")) == 9
    status = run_cli("status", str(out))
    assert "judged: 9 of 9 tasks" in status.output


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--api", "grpc"], 2, "must be one of auto, chat, completions"),
        (["--batch-size", "0"], 2, "greater than or equal to 1"),
    ],
)
def test_judge_command_bad_options(paper_lm: FakeLM, tmp_path: Path, args: list[str], code: int, message: str) -> None:
    result = CliRunner().invoke(app, ["judge", str(tmp_path), "--base-url", paper_lm.base_url, *args])
    assert result.exit_code == code and message in result.output, result.output


def test_judge_command_on_a_missing_pool(paper_lm: FakeLM, tmp_path: Path) -> None:
    result = run_cli("judge", str(tmp_path / "nope"), "--base-url", paper_lm.base_url)
    assert result.exit_code == 2 and "no such pool directory" in result.output


def test_a_run_against_batching_servers_records_each_servers_load_and_can_send_priorities(
    seeds: Path, tmp_path: Path
) -> None:
    from batchlm import BatchLM

    paper = PaperLM()

    def respond(prompt: str, body: dict[str, Any]) -> tuple[str, int]:
        text = paper(prompt, body)[0]
        return text, len(text.split())

    out = tmp_path / "pool"
    with (
        BatchLM(respond, max_num_seqs=8, step_base=0.002, priority_scheduling=True, models=("fake-model",)) as a,
        BatchLM(respond, max_num_seqs=8, step_base=0.002, priority_scheduling=True, models=("fake-model",)) as b,
    ):
        urls = [a.base_url, b.base_url]
        result = run_cli(
            "generate", "--base-url", urls[0], "--base-url", urls[1], "--seeds", str(seeds),
            "--out", str(out), "--prompts", str(PROMPTS), "--num-instructions", "20", "--seed", "3",
            "--api", "completions", "--server-priority",
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(read_jsonl(out / "tasks.jsonl")) == 20
    # each round's line ends with every server: running and waiting from its metrics, in flight, tokens/s
    host = urls[0].split("://")[1].rsplit("/v1", 1)[0]
    assert re.search(
        rf"servers: .*{re.escape(host)} run \d+ wait \d+ · in flight \d+/\d+ · [\d,]+ tok/s", result.output
    )
    assert set(a.priorities) | set(b.priorities) >= {1, 2}  # classification and instruction requests
    ledger = read_jsonl(out / "runs.jsonl")[-1]
    assert ledger["config"]["server_priority"] is True and ledger["config"]["concurrency"] is None
    for url in urls:
        stats = ledger["endpoints"][url]
        assert stats["signals"] == "metrics" and stats["requests"] > 0 and stats["output_tokens"] > 0
        assert {"limit", "mean_running", "mean_waiting", "peak_waiting", "limit_changes"} <= stats.keys()


# -- platform defaults and the ledger's clocks ---------------------------------------------------------


class OnCpu:
    """An in-process backend on vLLM's CPU build, as the runner sees it (answers like the paper's model)."""

    model = "cpu-model"
    on_cpu = True
    prepare_seconds = 1.5

    def __init__(self) -> None:
        self.lm = PaperLM(cut_every=0)

    def generate(self, prompts: Any, sampling: Sampling, seeds: Any = None) -> list[Completion]:
        return [Completion(*self.lm(p, {"seed": s})) for p, s in zip(prompts, seeds, strict=True)]


@pytest.mark.parametrize(("flags", "target", "notice"), [({}, 10, True), ({"num_instructions": 4}, 4, False)])
def test_cpu_engine_gets_a_small_default_target(
    tmp_path: Path, flags: dict[str, Any], target: int, notice: bool
) -> None:
    from selfinstruct.loop.runner import run_generate

    seeds = write_seeds(tmp_path / "seeds.jsonl")
    overrides = {"seeds": str(seeds), "out": str(tmp_path / "pool"), "prompts": str(PROMPTS), "batch_size": 2}
    cfg = GenerateConfig.from_sources(None, {**overrides, **flags})
    events: list[tuple[str, Any]] = []
    outcome = run_generate(cfg, backend=OnCpu(), on_event=lambda k, p: events.append((k, p)))
    assert outcome.info.target == target and outcome.exit_reason == "target_reached"
    assert cfg.num_instructions == (100 if not flags else 4), "the caller's config is not changed"
    notices = [p for k, p in events if k == "notice"]
    assert bool(notices) is notice
    if notice:
        assert "--num-instructions" in notices[0] and "CPU" in notices[0]
    (run,) = read_jsonl(tmp_path / "pool" / "runs.jsonl")
    assert run["target"] == target and run["config"]["num_instructions"] == target
    assert "explicit" not in run["config"]


def test_a_config_built_in_code_keeps_its_target_on_cpu(tmp_path: Path) -> None:
    from selfinstruct.loop.runner import run_generate

    seeds = write_seeds(tmp_path / "seeds.jsonl")
    cfg = GenerateConfig(seeds=str(seeds), out=str(tmp_path / "pool"), prompts=str(PROMPTS), batch_size=2,
                         num_instructions=12)  # fmt: skip
    assert run_generate(cfg, backend=OnCpu()).info.target == 12


def test_ledger_seconds_are_the_loops_and_start_up_is_recorded_apart(tmp_path: Path) -> None:
    """A clock that moves 1 s per reading: the start-up (pool load, model) and the loop are told apart."""
    from selfinstruct.loop.runner import run_generate

    ticks = iter(range(1_000_000))
    seeds = write_seeds(tmp_path / "seeds.jsonl")
    cfg = GenerateConfig(seeds=str(seeds), out=str(tmp_path / "pool"), prompts=str(PROMPTS), batch_size=2,
                         num_instructions=3)  # fmt: skip
    outcome = run_generate(cfg, backend=OnCpu(), clock=lambda: float(next(ticks)))
    (run,) = read_jsonl(tmp_path / "pool" / "runs.jsonl")
    assert run["startup_seconds"] > 0 and run["seconds"] > 0 and run["prepare_seconds"] == 1.5
    assert run["startup_seconds"] == outcome.startup_seconds
    assert outcome.seconds >= run["seconds"]  # the outcome also counts the ledger write itself


def test_judge_command_warns_when_auto_picks_completions_for_an_instruct_model(seeds: Path, tmp_path: Path) -> None:
    with FakeLM(respond=PaperLM(), models=["Qwen2.5-0.5B-Instruct"]) as lm:
        out = tmp_path / "pool"
        assert gen(lm, seeds, out, "--num-instructions", "3").exit_code == 0
        result = run_cli("judge", str(out), "--base-url", lm.base_url, "--prompts", str(PROMPTS))
    assert result.exit_code == 0, result.output
    assert "--api auto: using completions" in result.output and "pass --api chat" in result.output


def test_judge_command_says_which_api_auto_chose_for_a_chat_only_server(seeds: Path, tmp_path: Path) -> None:
    with FakeLM(respond=PaperLM(), models=["Qwen2.5-0.5B-Instruct"], apis=("chat",)) as lm:
        out = tmp_path / "pool"
        assert gen(lm, seeds, out, "--num-instructions", "3", "--api", "chat").exit_code == 0
        result = run_cli("judge", str(out), "--base-url", lm.base_url, "--prompts", str(PROMPTS))
    assert result.exit_code == 0, result.output
    assert "--api auto: using the chat API" in result.output and "(chat; 0 already scored" in result.output
    lines = read_jsonl(out / "judgements.jsonl")
    assert lines and all(line["raw"] for line in lines)
    scored = [line for line in lines if line["score"] is not None]
    assert scored and all(set(line["verdicts"]) == {"instruction", "input", "output"} for line in scored)


@pytest.mark.parametrize("command", ["generate", "judge"])
def test_options_an_engine_arg_error_points_to_exist(command: str) -> None:
    from selfinstruct.engines.vllm import FIRST_CLASS

    text = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "250"}).output
    missing = [flag for key, flag in FIRST_CLASS.items() if key != "model" and flag not in text]
    assert not missing, f"{command} lacks {missing}, which the engine-argument check tells users to pass"


def test_help_shows_the_config_tables_literally() -> None:
    text = CliRunner().invoke(app, ["generate", "--help"], env={"COLUMNS": "250"}).output
    assert "Also the [vllm] table" in text and "Also the [request] table" in text
    assert "Also the  table" not in text


class ThresholdWatcher(OnCpu):
    """Records the garbage collector's thresholds while the run calls it."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[int, ...]] = set()

    def generate(self, prompts: Any, sampling: Sampling, seeds: Any = None) -> list[Completion]:
        import gc

        self.seen.add(gc.get_threshold())
        return super().generate(prompts, sampling, seeds)


def test_a_run_collects_garbage_less_often_and_restores_the_thresholds(tmp_path: Path) -> None:
    import gc

    from selfinstruct.loop.runner import RUN_GC_THRESHOLDS, run_generate

    before = gc.get_threshold()
    seeds = write_seeds(tmp_path / "seeds.jsonl")
    cfg = GenerateConfig(seeds=str(seeds), out=str(tmp_path / "pool"), prompts=str(PROMPTS), batch_size=2,
                         num_instructions=4)  # fmt: skip
    backend = ThresholdWatcher()
    assert run_generate(cfg, backend=backend).exit_reason == "target_reached"
    assert backend.seen == {RUN_GC_THRESHOLDS} and before != RUN_GC_THRESHOLDS
    assert gc.get_threshold() == before
