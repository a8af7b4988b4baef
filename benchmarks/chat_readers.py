"""Chat prompts, readers and judge on a real instruct model: before (a git ref's templates and readers) and after
(this checkout's), on the same demonstrations, one engine load.

    python benchmarks/chat_readers.py --model ~/.cache/selfinstruct/models/qwen2.5-coder-0.5b-instruct \\
        --lists 12 --alpaca 6 --save replies.jsonl            # needs vLLM (the real tier's environment)
    python benchmarks/chat_readers.py --replies replies.jsonl  # the analysis again, from saved replies

Three measurements, each with the baseline's prompt + reader and this checkout's:

* instruction lists (Self-Instruct, ``--api chat``): candidates per reply, and how many are lost to a
  repeat of a demonstration or to a list marker/heading read as an item (the bar: under 10%). The
  baseline asks in the user's message; this checkout's side uses ``--form`` (default ``prefill``: the
  demonstrations open the assistant's reply, which the model continues; ``ask``: as the baseline);
* Alpaca lists with chat: complete tasks read, blocks counted as unparseable, demonstration copies;
* the judge: the share of tasks given a readable score, the scores of good tasks and of tasks given
  another task's output, and how many replies answered the rubric's three questions.

The baseline's modules are read with ``git show REF:path`` (default ``main``), so nothing of it is installed.
This measures the prompt and reader, not the loop: acceptance by reason comes from ``selfinstruct generate``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
import types
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selfinstruct.engines.chat import ChatMessage, user_chat  # noqa: E402
from selfinstruct.gates import filters as F  # noqa: E402
from selfinstruct.loop.stages import sample_demos  # noqa: E402
from selfinstruct.pool.task import Instance, Task, load_seed_tasks  # noqa: E402
from selfinstruct.protocol.alpaca import AlpacaTemplates, pick_demos  # noqa: E402
from selfinstruct.protocol.chatprompts import ChatTemplates, parse_chat_list  # noqa: E402
from selfinstruct.protocol.judge import JudgeTemplate, parse_verdict  # noqa: E402
from selfinstruct.protocol.prompts import _fill, one_line  # noqa: E402


def git_show(ref: str, path: str) -> str:
    return subprocess.run(["git", "show", f"{ref}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def baseline_module(ref: str, path: str, name: str) -> types.ModuleType:
    """A module of the baseline, executed from its source at ``ref`` under another name."""
    module = types.ModuleType(name)
    module.__file__ = f"{ref}:{path}"
    sys.modules[name] = module
    exec(compile(git_show(ref, path), module.__file__, "exec"), module.__dict__)
    return module


def build_requests(args: argparse.Namespace, ref: str) -> list[dict[str, Any]]:
    seeds = load_seed_tasks(ROOT / "seeds" / "seed_tasks.jsonl")
    rng = random.Random(args.seed)
    new_chat = ChatTemplates.load(ROOT / "prompts", form=args.form)
    old_list = git_show(ref, "prompts/chat/instruction_generation.txt")
    new_alpaca = AlpacaTemplates.load(ROOT / "prompts")
    old_alpaca = git_show(ref, "prompts/chat/alpaca.txt")
    requests: list[dict[str, Any]] = []
    for k in range(args.lists):
        demos = sample_demos(rng, seeds, [], 8, 0)
        examples = "\n".join(f"{i}. {one_line(t)}" for i, t in enumerate(demos, start=1))
        old = _fill(old_list, examples=examples, count="8").strip()
        new = new_chat.instruction_chat(demos)
        requests.append({"kind": "list", "side": "before", "k": k, "demos": demos, "message": old, "form": "ask"})
        requests.append({"kind": "list", "side": "after", "k": k, "demos": demos, "message": new[0].content,
                         "form": args.form,
                         "messages": [m.to_dict() for m in new], "prefix": new_chat.reply_prefix(demos),
                         "stops": [] if args.no_copy_stops else list(new_chat.copy_stops(demos))})  # fmt: skip
    for k in range(args.alpaca):
        tasks = pick_demos(rng, seeds, [], 3, 0)
        blocks = "\n\n".join(
            f"Task {n}\nInstruction: {one_line(t.instruction)}\nInput: {t.instances[0].input.strip() or '<none>'}\n"
            f"Output: {t.instances[0].output.strip()}"
            for n, t in enumerate(tasks, start=1)
        )
        old = _fill(old_alpaca, examples=blocks, count="20").strip()
        demo = [{"instruction": t.instruction, "input": t.instances[0].input, "output": t.instances[0].output}
                for t in tasks]  # fmt: skip
        for side, message in (("before", old), ("after", new_alpaca.chat_prompt(tasks, 20)[0].content)):
            requests.append({"kind": "alpaca", "side": side, "k": k, "demos": demo, "message": message})
    usable = [t for t in seeds if t.instances and t.instances[0].output.strip() and not t.is_classification]
    rng.shuffle(usable)
    good, donors = usable[: args.judge_good], usable[args.judge_good : args.judge_good + args.judge_swapped]
    pool = [(t, "good") for t in good]
    for n, donor in enumerate(donors):
        target = usable[-(n + 1)]
        wrong = Instance(target.instances[0].input, donor.instances[0].output)
        pool.append((Task(target.instruction, [wrong]), "swap"))
    old_rubric = JudgeTemplate(git_show(ref, "prompts/judge.txt"))
    new_rubric = JudgeTemplate.load(ROOT / "prompts")
    for n, (task, label) in enumerate(pool):
        for side, rubric in (("before", old_rubric), ("after", new_rubric)):
            requests.append({"kind": "judge", "side": side, "k": n, "label": label,
                             "message": rubric.user_message(task)})  # fmt: skip
    return requests


def generate(args: argparse.Namespace, requests: list[dict[str, Any]]) -> None:
    from selfinstruct.config import GenerateConfig
    from selfinstruct.engines import Request, Sampling
    from selfinstruct.engines.vllm import VLLMBackend
    from selfinstruct.protocol.judge import judge_sampling

    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # the tables on stdout, not the engine's log
    started = time.monotonic()
    # A small share of RAM (on the CPU build it covers weights and KV cache): the machine is shared.
    backend = VLLMBackend(
        args.model, seed=0, max_model_len=4096, gpu_memory_utilization=args.memory, engine_args={"enforce_eager": True}
    )
    print(f"engine ready in {time.monotonic() - started:.0f}s", file=sys.stderr)
    started = time.monotonic()  # the time limit counts generation only
    sampling = {
        # What the loop sends with --api chat (the paper's sampling, presence penalty 2, a stop after item 16),
        # with fewer tokens: eight items take about 200.
        "list": dataclasses.replace(GenerateConfig().instruction_sampling(chat=True), max_tokens=400),
        "alpaca": Sampling(max_tokens=900, temperature=0.7, top_p=0.5),
        "judge": judge_sampling(chat=True),
    }
    for kind in args.order.split(","):
        params = sampling[kind]
        todo = [r for r in requests if r["kind"] == kind and "reply" not in r]
        # Groups of whole demonstration sets (every side of a set together), so a time limit cuts both sides
        # of the comparison at the same sets.
        sets = sorted({r["k"] for r in todo})
        for start in range(0, len(sets), args.group):
            if args.time_limit is not None and time.monotonic() - started > args.time_limit:
                print(f"{kind}: time limit reached, {len(sets) - start} sets left out", file=sys.stderr)
                break
            group = set(sets[start : start + args.group])
            batch = [r for r in todo if r["k"] in group]
            t0 = time.monotonic()
            seeds = [1000 + r["k"] for r in batch]  # both sides of a set sample with the same seed
            chats = [tuple(ChatMessage(**m) for m in r["messages"]) if "messages" in r else user_chat(r["message"])
                     for r in batch]  # fmt: skip
            # As the loop sends them: one request each, with its own stop strings (a prefilled list stops where
            # it would re-list one of its demonstrations), batched by the engine.
            stream = backend.stream()
            try:
                for key, (request, chat, seed) in enumerate(zip(batch, chats, seeds, strict=True)):
                    stops = tuple(request.get("stops") or ())
                    own = dataclasses.replace(params, stop=(*params.stop, *stops)) if stops else params
                    stream.submit(Request(key, chat, own, seed))
                answers: dict[int, Any] = {}
                while len(answers) < len(batch):
                    answers.update((d.key, d.completion) for d in stream.poll(0.25))
            finally:
                stream.close()
            done = [answers[key] for key in range(len(batch))]
            for request, completion in zip(batch, done, strict=True):
                request["reply"], request["finish"] = completion.text, completion.finish_reason
                request["tokens"] = completion.completion_tokens
            print(f"{kind}: {len(batch)} replies in {time.monotonic() - t0:.0f}s", file=sys.stderr)
            if args.save:  # after each group, so a run stopped early keeps what it got
                args.save.write_text("".join(json.dumps(r) + "\n" for r in requests))


def share(part: int, whole: int) -> str:
    return f"{part} ({100 * part / whole:.0f}%)" if whole else "0"


def analyse_lists(requests: list[dict[str, Any]], old: types.ModuleType) -> None:
    print("\n## Instruction lists (Self-Instruct, --api chat)\n")
    print("| prompt | reader | replies | candidates | demo copies | list markers/headings as items | lost | "
          "repeats within a reply | replies stopped at a re-listed demonstration |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for side in ("before", "after"):
        replies = [r for r in requests if r["kind"] == "list" and r["side"] == side and "reply" in r]
        # A continued reply (prefill) is only readable with the number it continues: no "before" reader.
        for reader in ("before", "after") if not any(r.get("prefix") for r in replies) else ("after",):
            candidates = copies = markers = repeats = stopped = 0
            for r in replies:
                cut = r["finish"] == "length"
                if reader == "before":
                    items = old.parse_chat_list(r["reply"], truncated=cut).items
                    junk = [i for i in items if not any(c.isalpha() for c in i) or i.rstrip().endswith(":")
                            or len(i.split()) <= 1]  # fmt: skip
                    markers += len(junk)
                    items = [i for i in items if i not in junk]
                    candidates += len(junk)
                else:
                    parsed = parse_chat_list(r.get("prefix", "") + r["reply"], truncated=cut)
                    items = parsed.items
                    noted = sum(parsed.notes.values())
                    if (
                        r.get("stops")
                        and r["finish"] == "stop"
                        and re.search(r"(^|\n)\s*\d+[.)]?\s*$", r.get("prefix", "") + r["reply"])
                    ):
                        # The reply ended on one of its stop strings (a demonstration it began to write again):
                        # the bare number left in front of it is a copy that was never written, not an item.
                        stopped += 1
                        noted -= 1
                    markers += noted
                    candidates += noted
                candidates += len(items)
                own = [i for i in items if F.copied_demo(i, r["demos"]) is None]
                copies += len(items) - len(own)
                # Not lost to the prompt form but to novelty (too_similar): the same item written again.
                repeats += len(own) - len({" ".join(i.lower().split()) for i in own})
            form = next((f" ({r['form']})" for r in replies if "form" in r), "")
            print(f"| {side}{form} | {reader} | {len(replies)} | {candidates} | {share(copies, candidates)} | "
                  f"{share(markers, candidates)} | {share(copies + markers, candidates)} | "
                  f"{share(repeats, candidates)} | {stopped} |")  # fmt: skip


def analyse_alpaca(requests: list[dict[str, Any]], old: types.ModuleType) -> None:
    from selfinstruct.protocol.alpaca import parse_task_list

    print("\n## Alpaca lists with chat\n")
    print("| prompt | reader | replies | tasks read | unparseable (counted) | demo copies | task headers seen |")
    print("|---|---|---|---|---|---|---|")
    import re

    header = re.compile(r"^[ \t*#]*(?:\d+[.)][ \t]*)?(?:\*\*)?Task[ \t]*#?\d+", re.M | re.I)
    for side in ("before", "after"):
        replies = [r for r in requests if r["kind"] == "alpaca" and r["side"] == side and "reply" in r]
        for reader in ("before", "after"):
            tasks = bad = copies = headers = 0
            for r in replies:
                parse = old.parse_task_list if reader == "before" else parse_task_list
                parsed = parse(r["reply"], truncated=r["finish"] == "length")
                tasks += len(parsed.tasks)
                bad += parsed.unparseable
                headers += len(header.findall(r["reply"]))
                demos = [d["instruction"] for d in r["demos"]]
                copies += sum(1 for t in parsed.tasks if F.copied_demo(t.instruction, demos) is not None)
            print(f"| {side} | {reader} | {len(replies)} | {tasks} | {bad} | {share(copies, tasks)} | {headers} |")


def analyse_judge(requests: list[dict[str, Any]], old: types.ModuleType) -> None:
    print("\n## The judge (chat)\n")
    print("| rubric + reader | tasks | scored | scores | mean good / swapped | replies with the 3 answers |")
    print("|---|---|---|---|---|---|")
    for side in ("before", "after"):
        replies = [r for r in requests if r["kind"] == "judge" and r["side"] == side and "reply" in r]
        parse = old.parse_verdict if side == "before" else parse_verdict
        verdicts = [parse(r["reply"]) for r in replies]
        scores = [v.score for v in verdicts if v.score is not None]
        pairs = list(zip(verdicts, replies, strict=True))
        by = {lab: [v.score for v, r in pairs if r["label"] == lab and v.score is not None] for lab in ("good", "swap")}
        means = " / ".join(f"{statistics.mean(by[k]):.2f}" if by[k] else "-" for k in ("good", "swap"))
        answered = sum(1 for v in verdicts if getattr(v, "verdicts", None))
        hist = " ".join(f"{k}:{n}" for k, n in sorted(Counter(scores).items()))
        print(f"| {side} | {len(replies)} | {share(len(scores), len(replies))} | {hist} | {means} | {answered} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="The instruct model folder (vLLM in-process).")
    parser.add_argument("--replies", type=Path, help="Analyse these saved replies instead of generating.")
    parser.add_argument("--save", type=Path, help="Write the replies here (JSON Lines).")
    parser.add_argument("--baseline", default="main", help="The git ref whose prompts and readers are 'before'.")
    parser.add_argument("--lists", type=int, default=12)
    parser.add_argument("--alpaca", type=int, default=6)
    parser.add_argument("--judge-good", type=int, default=20)
    parser.add_argument("--judge-swapped", type=int, default=10)
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--memory", type=float, default=0.16, help="The engine's share of RAM (weights and KV).")
    parser.add_argument("--order", default="judge,list,alpaca", help="Which requests go first (comma-separated).")
    parser.add_argument(
        "--form",
        choices=("prefill", "ask"),
        default="prefill",
        help="This checkout's form of the instruction-list chat (the baseline's always asks).",
    )
    parser.add_argument(
        "--no-copy-stops", action="store_true",
        help="prefill without the loop's stop strings at re-listed demonstrations (to measure what they do)",
    )  # fmt: skip
    parser.add_argument("--time-limit", type=float, help="Seconds: start no more groups after this.")
    parser.add_argument("--group", type=int, default=4, help="Demonstration sets generated per engine call.")
    args = parser.parse_args()
    if args.replies:
        requests = [json.loads(line) for line in args.replies.read_text().splitlines() if line.strip()]
    else:
        if not args.model:
            parser.error("--model or --replies is required")
        requests = build_requests(args, args.baseline)
        if args.save and args.save.exists():  # a run stopped early: keep the replies it saved
            saved = {(r["kind"], r["side"], r["k"]): r for r in map(json.loads, args.save.read_text().splitlines())}
            for r in requests:
                old = saved.get((r["kind"], r["side"], r["k"]))
                same = old and old["message"] == r["message"] and old.get("messages") == r.get("messages")
                if same and "reply" in old:
                    r.update(reply=old["reply"], finish=old["finish"], tokens=old.get("tokens", 0))
        generate(args, requests)
    old_chat = baseline_module(args.baseline, "selfinstruct/protocol/chatprompts.py", "baseline_chatprompts")
    old_alpaca = baseline_module(args.baseline, "selfinstruct/protocol/alpaca.py", "baseline_alpaca")
    old_judge = baseline_module(args.baseline, "selfinstruct/protocol/judge.py", "baseline_judge")
    answered = {r["kind"] for r in requests if "reply" in r}  # a table for each kind that was generated
    if "list" in answered:
        analyse_lists(requests, old_chat)
    if "alpaca" in answered:
        analyse_alpaca(requests, old_alpaca)
    if "judge" in answered:
        analyse_judge(requests, old_judge)


if __name__ == "__main__":
    main()
