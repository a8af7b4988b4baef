"""How much time the bootstrap loop itself adds, with a model that answers instantly, up to the paper's 52K.

The "model" replays real instructions from the benchmark corpus as its numbered lists, answers "No" to the
classification question and gives two instances per task, so everything but the language model runs for
real: prompt rendering, parsing, heuristic filters, the novelty index against a growing pool (exact
provenance: the top-5 and ``max_similarity`` of every task), instance filters, and crash-safe appends (fsync
included) to a pool directory on disk.

The corpus holds fewer distinct instructions than a 52,000-task pool needs, so after one pass over it in a
seeded shuffled order the model splices two corpus instructions (the first half of one, the second half of
another, chosen by a seeded generator): real vocabulary and lengths, mostly novel, sometimes rejected. The
corpus text is read at run time and never stored.

    python benchmarks/loop.py --corpus ../shared/bench/instructions.jsonl [--target 52000] [--profile 25]
    python benchmarks/loop.py --initial-pool 1000000 --target 1005000 --workers 1

``--workers N`` sets the novelty worker processes (``GenerateConfig.workers``; default: every core, 1: all
in the main process). ``--initial-pool N`` starts from a pool of N synthesized tasks (corpus splices as
above, from their own seeded generator, duplicates dropped), written to the pool directory before the run,
so that the loop's speed at a pool of a million can be measured without growing one; the tasks/s reported
for it then count only the rounds after the first (the first absorbs loading the pool and building the
index). Memory is sampled about every two seconds during the run: the resident set of this process (which
holds the pool's tasks) and of its novelty workers (which hold the index).

Prints, per band of pool sizes, the rounds in it, the mean wall and CPU loop time per round (the streaming
loop reports rounds in bursts as their requests complete, so a median of single rounds means little), and the loop
time per accepted task; then how that time per accepted task grows with the pool (the slope of log time
against log pool size between the first and last bands: 0 is flat, 1 is linear). CPU time is the process's
own, which other programs on a shared machine barely disturb; wall time includes fsync waits. With
``--profile N``, also the N functions with the most cumulative time.

:class:`InstantModel` is the stateless variant (its text depends only on the request's seed) that
``benchmarks/standin_engine.py`` serves one request at a time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import os
import platform
import pstats
import random
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from selfinstruct.config import GenerateConfig
from selfinstruct.engines import Completion, Sampling
from selfinstruct.gates.novelty_workers import available_cores
from selfinstruct.loop.runner import run_generate
from selfinstruct.loop.stages import derive_seed, make_task
from selfinstruct.paths import default_prompts_dir, default_seeds_path
from selfinstruct.pool.directory import TASKS_FILE, machine_task_id
from selfinstruct.pool.task import Instance

MARKS = [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 52_000, 100_000, 200_000]


def load_corpus(path: str) -> list[str]:
    return [" ".join(json.loads(line)["instruction"].split()) for line in Path(path).read_text().split("\n") if line]


class ReplayModel:
    """Answers each stage instantly; instruction lists come from the corpus, then from corpus splices."""

    model = "replay"

    def __init__(self, instructions: Sequence[str], per_list: int = 7, seed: int = 0) -> None:
        self.instructions = [" ".join(text.split()) for text in instructions]
        self.per_list = per_list
        self.next = 0
        self.rng = random.Random(seed)

    def _instruction(self, i: int) -> str:
        corpus = self.instructions
        if i < len(corpus):
            return corpus[i]
        first = corpus[self.rng.randrange(len(corpus))].split()
        second = corpus[self.rng.randrange(len(corpus))].split()
        return " ".join(first[: (len(first) + 1) // 2] + second[len(second) // 2 :])

    def generate(
        self, prompts: Sequence[str], sampling: Sampling, seeds: Sequence[int] | None = None
    ) -> list[Completion]:
        out = []
        for prompt in prompts:
            if prompt.endswith("Is it classification?"):
                out.append(Completion(" No", "stop", 300, 1))
            elif prompt.endswith("\n"):
                text = "Example 1\nInput: first case\nOutput: one\n\nExample 2\nOutput: two\n"
                out.append(Completion(text, "stop", 800, 20))
            else:
                start = int(prompt.rsplit("\n", 1)[1].rstrip("."))
                items = [self._instruction(self.next + i) for i in range(self.per_list)]
                self.next += self.per_list
                text = " " + items[0] + "".join(f"\n{start + i}. {t}" for i, t in enumerate(items[1:], start=1))
                out.append(Completion(text, "stop", 400, len(text.split())))
        return out


def write_pool(directory: Path, corpus: Sequence[str], count: int, seed: int = 1) -> int:
    """Write ``count`` synthesized machine tasks (corpus splices, no duplicates) to a new pool directory.

    Each record carries the provenance the loop writes: five ``most_similar`` entries (earlier instructions
    of the pool, with scores) and eight ``demonstrations`` (six from a fixed set of 175 standing in for the
    seed tasks, two earlier pool instructions), so that the file and the loaded pool have a real run's size.
    """
    rng = random.Random(seed)
    halves = [(t.split()[: (len(t.split()) + 1) // 2], t.split()[len(t.split()) // 2 :]) for t in corpus]
    seeds = corpus[:175]
    recent: list[str] = list(corpus[175:1175])
    seen: set[str] = set()
    directory.mkdir(parents=True)
    with (directory / TASKS_FILE).open("w", encoding="utf-8") as out:
        while len(seen) < count:
            text = " ".join(halves[rng.randrange(len(halves))][0] + halves[rng.randrange(len(halves))][1])
            key = " ".join(text.casefold().split())
            if not key or key in seen:
                continue
            seen.add(key)
            similar = sorted((round(rng.uniform(0.2, 0.7), 6) for _ in range(5)), reverse=True)
            task = make_task(
                text, [Instance("", "one")], is_classification=False, instance_format="input_first",
                classification_answer="No", max_similarity=similar[0],
                most_similar=[{"instruction": rng.choice(recent), "score": score} for score in similar],
                demonstrations=rng.sample(seeds, 6) + rng.sample(recent, 2),
                run_id="synthesized", round_number=len(seen) // 100, model=ReplayModel.model,
            )  # fmt: skip
            recent[rng.randrange(len(recent))] = text
            task.id = machine_task_id(len(seen) - 1)
            out.write(json.dumps(task.to_record(), ensure_ascii=False) + "\n")
    return len(seen)


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (Linux /proc; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    """This process's child processes (Linux /proc; empty elsewhere)."""
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


class InstantModel:
    """Answers each stage at once; the text depends only on the prompt's stage and the request's seed."""

    model = "instant"

    def __init__(self, corpus: Sequence[str], per_list: int = 7) -> None:
        self.halves = [(t.split()[: len(t.split()) // 2], t.split()[len(t.split()) // 2 :]) for t in corpus]
        self.per_list = per_list

    def item(self, seed: int, j: int) -> str:
        n = len(self.halves)
        a = self.halves[derive_seed(seed, j, "a") % n][0]
        b = self.halves[derive_seed(seed, j, "b") % n][1]
        return " ".join(a + b) or "Describe a quiet morning in a small harbour town."

    def complete(self, prompt: str, seed: int) -> Completion:
        if prompt.endswith("Is it classification?"):
            return Completion(" No", "stop", 300, 1)
        if prompt.endswith("\n"):
            text = f"Example 1\nInput: case {seed % 97}\nOutput: one\n\nExample 2\nOutput: two {seed % 89}\n"
            return Completion(text, "stop", 800, 20)
        start = int(prompt.rsplit("\n", 1)[1].rstrip("."))
        items = [self.item(seed, j) for j in range(self.per_list)]
        text = " " + items[0] + "".join(f"\n{start + i}. {t}" for i, t in enumerate(items[1:], start=1))
        return Completion(text, "stop", 400, len(text.split()))

    def generate(
        self, prompts: Sequence[str], sampling: Sampling, seeds: Sequence[int] | None = None
    ) -> list[Completion]:
        seeds = seeds if seeds is not None else [0] * len(prompts)
        return [self.complete(p, int(s)) for p, s in zip(prompts, seeds, strict=True)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="../shared/bench/instructions.jsonl")
    parser.add_argument("--target", type=int, default=52_000, help="pool size to grow to (the paper: 52,000)")
    parser.add_argument("--batch-size", type=int, default=32, help="instruction requests per round (reporting)")
    parser.add_argument("--similarity-floor", type=float, default=0.0, help="provenance floor (docs/performance.md)")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="print the top N functions")
    parser.add_argument("--workers", type=int, default=None, help="novelty workers (default: every core)")
    parser.add_argument("--initial-pool", type=int, default=0, metavar="N", help="start from N synthesized tasks")
    parser.add_argument(
        "--pool-cache", default=None, metavar="DIR", help="keep the synthesized pool in DIR and copy it from there"
    )
    args = parser.parse_args(argv)
    if args.initial_pool >= args.target:
        parser.error("--target is the pool size to grow to: give more than --initial-pool")

    corpus = load_corpus(args.corpus)
    random.Random(0).shuffle(corpus)
    model = ReplayModel(corpus)
    # (pool size after the round, wall seconds, CPU seconds, accepted) per round
    rounds: list[tuple[int, float, float, int]] = []
    last_cpu = [time.process_time()]

    # Resident memory in MB, peak of the samples: (this process, its novelty workers together).
    memory = {"main": 0.0, "workers": 0.0}
    marks_cpu: list[tuple[float, float]] = []  # per round: (this process's CPU, its workers' CPU) so far
    last_sample = [0.0]

    children: list[int] = []

    def sample_memory() -> None:
        now = time.monotonic()
        if now - last_sample[0] < 2.0:
            return
        last_sample[0] = now
        children[:] = _children(os.getpid())  # (scanning /proc costs milliseconds: not every round)
        memory["main"] = max(memory["main"], _rss_mb(os.getpid()))
        memory["workers"] = max(memory["workers"], sum(_rss_mb(pid) for pid in children))

    def on_event(kind: str, payload: object) -> None:
        if kind == "round":
            cpu = time.process_time()
            accepted = payload.accepted  # type: ignore[attr-defined]
            count = accepted if isinstance(accepted, int) else len(accepted)
            rounds.append((payload.pool_size, payload.seconds, cpu - last_cpu[0], count))  # type: ignore[attr-defined]
            last_cpu[0] = cpu
            sample_memory()
            marks_cpu.append((cpu, sum(_cpu_seconds(pid) for pid in children)))

    profiler = cProfile.Profile() if args.profile else None
    workers = args.workers or available_cores()
    with tempfile.TemporaryDirectory() as tmp:
        if args.initial_pool:
            made = time.perf_counter()
            if args.pool_cache:
                cached = Path(args.pool_cache) / f"synthesized-{args.initial_pool}"
                if not cached.exists():
                    write_pool(cached.with_suffix(".partial"), corpus, args.initial_pool)
                    cached.with_suffix(".partial").rename(cached)
                shutil.copytree(cached, Path(tmp) / "pool")
            else:
                write_pool(Path(tmp) / "pool", corpus, args.initial_pool)
            print(f"wrote a pool of {args.initial_pool:,} synthesized tasks in {time.perf_counter() - made:.1f} s")
        config = GenerateConfig(
            seeds=str(default_seeds_path()), prompts=str(default_prompts_dir()), out=str(Path(tmp) / "pool"),
            num_instructions=args.target, batch_size=args.batch_size, seed=0, saturation_window=50,
            similarity_floor=args.similarity_floor, workers=workers,
        )  # fmt: skip
        memory["before"] = _rss_mb(os.getpid())
        started = time.perf_counter()
        cpu_started = time.process_time()
        last_cpu[0] = cpu_started
        if profiler is not None:
            profiler.enable()
        outcome = run_generate(config, backend=model, on_event=on_event)
        if profiler is not None:
            profiler.disable()
        total = time.perf_counter() - started
        total_cpu = time.process_time() - cpu_started
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        workers_cpu = usage.ru_utime + usage.ru_stime

    marks = [m for m in MARKS if m < args.target] + [args.target]
    bands: dict[int, list[tuple[int, float, float, int]]] = {m: [] for m in marks}
    for row in rounds:
        for m in marks:
            if row[0] <= m:
                bands[m].append(row)
                break
    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end;"
        f" corpus {args.corpus} ({len(corpus):,} instructions)"
    )
    print(
        f"similarity_floor {args.similarity_floor}, {args.batch_size} instruction requests per round, "
        "7 instructions per list"
    )
    print(f"novelty workers: {workers} (config workers={workers}); start pool {args.initial_pool:,} tasks")
    print(f"grew a pool to {outcome.pool_size:,} tasks in {outcome.totals.rounds} rounds")
    print(f"({outcome.totals.candidates:,} candidates, exit: {outcome.exit_reason})\n")
    print(
        f"{'pool size up to':>16} {'rounds':>7} {'wall/round (mean)':>20} {'CPU/round (mean)':>19}"
        f" {'wall per accepted task':>23}"
    )
    growth: list[tuple[float, float]] = []
    previous = 0
    for m in marks:
        rows = bands[m]
        if not rows:
            continue
        accepted = sum(r[3] for r in rows)
        wall = sum(r[1] for r in rows)
        per_task = wall / accepted if accepted else float("nan")
        if accepted:
            growth.append(((previous + min(m, rows[-1][0])) / 2, per_task))
        previous = m
        print(
            f"{m:>16,} {len(rows):>7} {statistics.fmean(r[1] for r in rows) * 1e3:>17.1f} ms"
            f" {statistics.fmean(r[2] for r in rows) * 1e3:>16.1f} ms {per_task * 1e3:>20.2f} ms"
        )
    if len(growth) >= 2:
        (x0, y0), (x1, y1) = growth[0], growth[-1]
        slope = math.log(y1 / y0) / math.log(x1 / x0)
        print(
            f"\ntime per accepted task grows as pool size^{slope:.2f} "
            f"({y0 * 1e3:.2f} ms near {x0:,.0f} tasks -> {y1 * 1e3:.2f} ms near {x1:,.0f})"
        )
    grown = outcome.pool_size - args.initial_pool
    print(
        f"\nwhole run: {total:.1f} s wall, {total_cpu:.1f} s CPU (+{workers_cpu:.1f} s in novelty workers);"
        f" {grown / total:,.0f} accepted tasks/s"
    )
    rate = outcome.totals.candidates / total
    print(f"of loop work, {rate:,.0f} candidates/s through parse, filters, novelty, append")
    if len(rounds) >= 2:
        later = rounds[1:]
        steady = sum(r[3] for r in later) / max(sum(r[1] for r in later), 1e-9)
        tasks = sum(r[3] for r in later)
        main_cpu = (marks_cpu[-1][0] - marks_cpu[0][0]) / max(tasks, 1)
        workers_cpu_per = (marks_cpu[-1][1] - marks_cpu[0][1]) / max(tasks, 1)
        print(
            f"after the first round: {steady:,.0f} accepted tasks/s ({tasks:,} tasks); CPU per accepted task:"
            f" {main_cpu * 1e3:.2f} ms in this process, {workers_cpu_per * 1e3:.2f} ms in novelty workers"
        )
    print(
        f"resident memory, peak of samples: this process {memory['main']:,.0f} MB (before the run"
        f" {memory['before']:,.0f} MB), novelty workers {memory['workers']:,.0f} MB together"
    )
    if profiler is not None:
        buffer = io.StringIO()
        pstats.Stats(profiler, stream=buffer).sort_stats("cumulative").print_stats(args.profile)
        print(buffer.getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
