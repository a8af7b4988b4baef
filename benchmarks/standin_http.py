"""Does the streaming loop keep batching *servers* full over HTTP? The HTTP variant of ``standin_engine.py``.

Starts ``--endpoints`` stand-in servers (:mod:`tests.batchlm`: an asyncio OpenAI-compatible server that
batches like an engine: ``--max-num-seqs`` sequences run, the rest wait, one token per running sequence
per step of ``--step-base + --step-per-seq * running`` seconds, vLLM's metric names at ``/metrics``) in a
separate process, so the stand-in's CPU never competes with the loop's for one interpreter lock. The text
of each completion comes from the instant model of ``benchmarks/loop.py``; its length in tokens is its
length in words.

The loop runs through the real path: :func:`selfinstruct.loop.runner.run_generate` with the OpenAI backend,
its pacing (:mod:`selfinstruct.engines.pacing`) on by default, exactly as ``selfinstruct generate
--base-url ...`` runs it.

    python benchmarks/standin_http.py --corpus ../shared/bench/instructions.jsonl [--endpoints 4] [--target 3000]

Reports, per endpoint, the mean number of running sequences in the middle half of the run (time-weighted,
between the first request and the last step) divided by ``max_num_seqs`` (target: >= 0.95), the mean
waiting; output tokens/s against the engines' maximum; the time to the first committed round; and what the
controller did (its limit changes, by reason, with the first ones in full); and the machine: its cores, a
Python speed yardstick (millions of loop iterations a second, so that runs of different days can be set side
by side), the share of its CPU time that was idle or stolen by the hypervisor in the middle half, and the
cores the loop's process used then. ``--other-client N`` makes the first endpoint report N more waiting
requests (another client's queue) from ``--other-at`` seconds for ``--other-for`` seconds, to show the
controller backing off and coming back.

``--measure-server SECONDS`` instead measures the stand-in itself: requests per second it answers on
keep-alive connections from a minimal asyncio client in another process (1-token completions, no step
time), the figure that says whether a benchmark measures the loop or the stand-in.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from loop import InstantModel, load_corpus

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from selfinstruct.config import GenerateConfig
from selfinstruct.engines.openai import OpenAIBackend
from selfinstruct.loop.runner import run_generate
from selfinstruct.paths import default_prompts_dir, default_seeds_path


def _serve(conn: Connection, endpoints: int, options: dict[str, Any], corpus: str | None) -> None:
    """The server process: start the stand-ins, answer commands from the benchmark until told to stop."""
    from batchlm import BatchLM

    if corpus is not None:
        model = InstantModel(load_corpus(corpus))

        def respond(prompt: str, body: dict[str, Any]) -> tuple[str, int]:
            completion = model.complete(prompt, int(body.get("seed") or 0))
            return completion.text, completion.completion_tokens

        servers = [BatchLM(respond, **options).start() for _ in range(endpoints)]
    else:
        servers = [BatchLM(**options).start() for _ in range(endpoints)]
    conn.send([s.base_url for s in servers])
    while True:
        try:
            command, *args = conn.recv()
        except EOFError:  # the benchmark went away: stop quietly
            command, args = "stop", []
        if command == "phantom":
            servers[args[0]].phantom_waiting = args[1]
        elif command == "report":
            conn.send(
                [
                    {
                        "history": s.history, "steps": s.steps, "tokens": s.tokens, "requests": s.requests,
                        "first_request": s.first_request, "last_step_end": s.last_step_end,
                        "preemptions": s.preemptions, "metrics_reads": s.metrics_reads, "max_queued": s.max_queued,
                        "refused": dict(s.refused), "cpu_seconds": time.process_time(),
                    }
                    for s in servers
                ]
            )  # fmt: skip
        elif command == "stop":
            for s in servers:
                s.stop()
            with contextlib.suppress(OSError):
                conn.send("stopped")
            return


class StandIns:
    """The stand-in servers in their own process."""

    def __init__(self, endpoints: int, options: dict[str, Any], corpus: str | None) -> None:
        context = mp.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, endpoints, options, corpus), daemon=True)
        self.process.start()
        if not self.conn.poll(60):
            raise RuntimeError("the stand-in servers did not start within 60 s")
        self.urls: list[str] = self.conn.recv()

    def phantom(self, endpoint: int, waiting: int) -> None:
        self.conn.send(("phantom", endpoint, waiting))

    def report(self) -> list[dict[str, Any]]:
        self.conn.send(("report",))
        reply: list[dict[str, Any]] = self.conn.recv()
        return reply

    def stop(self) -> None:
        self.conn.send(("stop",))
        self.conn.poll(15)
        self.process.join(15)
        if self.process.is_alive():
            self.process.kill()


def _mean(history: list[tuple[float, float, int, int]], start: float, end: float, index: int) -> float:
    """Time-weighted mean of ``history[*][index]`` (2: running, 3: waiting) over ``[start, end]``."""
    total = 0.0
    for s, seconds, *values in history:
        overlap = min(s + seconds, end) - max(s, start)
        if overlap > 0:
            total += overlap * values[index - 2]
    return total / max(end - start, 1e-9)


async def _hammer(port: int, connections: int, seconds: float) -> int:
    """Send 1-token completions on ``connections`` keep-alive connections for ``seconds``; replies counted."""
    body = json.dumps({"model": "stand-in", "prompt": "hello there", "max_tokens": 1}).encode()
    head = f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
    request = head.encode() + b"\r\n\r\n" + body
    stop_at = time.perf_counter() + seconds

    async def one() -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        done = 0
        while time.perf_counter() < stop_at:
            writer.write(request)
            await writer.drain()
            reply_head = await reader.readuntil(b"\r\n\r\n")
            lines = reply_head.lower().split(b"\r\n")
            length = next(int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length"))
            await reader.readexactly(length)
            done += 1
        writer.close()
        return done

    return sum(await asyncio.gather(*(one() for _ in range(connections))))


def measure_server(seconds: float, connections: int) -> int:
    servers = StandIns(1, {"max_num_seqs": 4096, "step_base": 0.0, "step_per_seq": 0.0, "keep_history": False}, None)
    try:
        port = int(servers.urls[0].rsplit(":", 1)[1].split("/")[0])
        started = time.perf_counter()
        answered = asyncio.run(_hammer(port, connections, seconds))
        elapsed = time.perf_counter() - started
        print(f"stand-in server: {answered:,} requests in {elapsed:.1f} s on {connections} keep-alive connections "
              f"= {answered / elapsed:,.0f} requests/s (client in another process)")  # fmt: skip
        # the same through the real client: the OpenAI backend (aiohttp), all requests submitted at once
        with OpenAIBackend(servers.urls[0], "stand-in", concurrency=connections) as backend:
            from selfinstruct.engines import Request, Sampling

            stream = backend.stream()
            n = int(min(20_000, max(1000, answered / elapsed * seconds)))
            sampling = Sampling(max_tokens=1)
            started = time.perf_counter()
            for k in range(n):
                stream.submit(Request(k, "hello there", sampling, k))
            got = 0
            while got < n and time.perf_counter() - started < 10 * seconds:
                got += len(stream.poll(0.1))
            elapsed = time.perf_counter() - started
        print(f"through the OpenAI backend (aiohttp, {connections} in flight): {got:,} requests in {elapsed:.1f} s "
              f"= {got / elapsed:,.0f} requests/s")  # fmt: skip
    finally:
        servers.stop()
    return 0


class MachineLoad:
    """The whole machine's CPU time (``/proc/stat``), sampled twice a second in a thread: how idle the cores
    were, and how much time the hypervisor gave to others ("steal"), over any stretch of the run. Days
    differ on a shared machine; this says whether a run had CPU to spare. Linux only (empty elsewhere)."""

    def __init__(self) -> None:
        # (perf_counter, idle + iowait, steal, total, this process's user + system), in clock ticks
        self.samples: list[tuple[float, int, int, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="machine-load", daemon=True)

    @staticmethod
    def _read() -> tuple[int, int, int, int] | None:
        try:
            with open("/proc/stat") as fh:
                fields = [int(v) for v in fh.readline().split()[1:]]
            with open("/proc/self/stat") as fh:
                own = fh.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        except (OSError, ValueError, IndexError):
            return None
        fields += [0] * (8 - len(fields))
        # user nice system idle iowait irq softirq steal [guest guest_nice: already in user and nice]
        return fields[3] + fields[4], fields[7], sum(fields[:8]), int(own[11]) + int(own[12])

    def _run(self) -> None:
        while True:
            read = self._read()
            if read is None:
                return
            self.samples.append((time.perf_counter(), *read))
            if self._stop.wait(0.5):
                return

    def __enter__(self) -> MachineLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, start: float, end: float) -> tuple[float, float, float] | None:
        """(idle, steal) as shares of all CPU time, and this process's CPU in cores, between the samples
        nearest ``start`` and ``end``."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2 or inside[-1][3] == inside[0][3]:
            return None
        first, last = inside[0], inside[-1]
        total = last[3] - first[3]
        cores = (last[4] - first[4]) / (os.sysconf("SC_CLK_TCK") * (last[0] - first[0]))
        return (last[1] - first[1]) / total, (last[2] - first[2]) / total, cores


def python_speed() -> float:
    """Millions of simple Python loop iterations per second in this process: a yardstick for comparing
    runs made on different days (the loop is mostly Python; a slower day shows here first)."""
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i
        best = max(best, 1.0 / (time.perf_counter() - started))
    return best


def _changes(decisions: list[Any]) -> str:
    return "; ".join(f"{d.seconds:.1f}s {d.before}->{d.after} ({d.reason})" for d in decisions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="../shared/bench/instructions.jsonl")
    parser.add_argument("--target", type=int, default=3000)
    parser.add_argument("--endpoints", type=int, default=1)
    parser.add_argument("--max-num-seqs", type=int, default=256)
    parser.add_argument("--step-base", type=float, default=0.010, help="seconds per step, fixed part")
    parser.add_argument("--step-per-seq", type=float, default=0.0001, help="seconds per step per sequence")
    parser.add_argument("--window", type=int, default=None, help="the loop's --window (default: the loop's own)")
    parser.add_argument("--concurrency", type=int, default=None, help="fixed per endpoint (default: adaptive)")
    parser.add_argument("--similarity-floor", type=float, default=None,
                        help="the loop's similarity_floor (default: 0.0, the exact top-5 of every task)")  # fmt: skip
    parser.add_argument(
        "--other-client",
        type=int,
        default=0,
        metavar="N",
        help="N more waiting on the first endpoint (another client's queue), from --other-at "
        "seconds after the start for --other-for seconds",
    )
    parser.add_argument("--other-at", type=float, default=20.0)
    parser.add_argument("--other-for", type=float, default=20.0)  # fmt: skip
    parser.add_argument("--measure-server", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--connections", type=int, default=64, help="for --measure-server")
    parser.add_argument("--time-limit", default="10m", help="a bound on the run")
    parser.add_argument("--progress", type=int, default=0, metavar="SECONDS",
                        help="print the loop's progress (in flight by stage, each server) every SECONDS")  # fmt: skip
    parser.add_argument("--timeline", type=float, default=0.0, metavar="SECONDS",
                        help="also print mean running/waiting per endpoint for each slice of this length")  # fmt: skip
    args = parser.parse_args(argv)
    if args.measure_server:
        return measure_server(args.measure_server, args.connections)

    speed = python_speed()
    options = {"max_num_seqs": args.max_num_seqs, "step_base": args.step_base, "step_per_seq": args.step_per_seq}
    servers = StandIns(args.endpoints, options, args.corpus)
    machine = MachineLoad()
    first_round: list[float] = []
    stop_phantom = threading.Event()
    try:
        backend = OpenAIBackend(servers.urls, "stand-in", concurrency=args.concurrency)
        with backend, tempfile.TemporaryDirectory() as tmp:
            pool = Path(tmp) / "pool"
            overrides: dict[str, Any] = {}
            if args.window is not None:
                overrides["window"] = args.window
            if args.similarity_floor is not None:
                overrides["similarity_floor"] = args.similarity_floor
            config = GenerateConfig(
                seeds=str(default_seeds_path()), prompts=str(default_prompts_dir()), out=str(pool),
                num_instructions=args.target, seed=0, api="completions", time_limit=args.time_limit, **overrides,
            )  # fmt: skip

            def on_event(kind: str, payload: Any) -> None:
                if kind == "round" and not first_round:
                    first_round.append(time.perf_counter())
                if kind == "progress" and args.progress and int(payload.seconds) % args.progress == 0:
                    stages = " ".join(f"{k} {v}" for k, v in payload.in_flight.items() if v)
                    servers = "; ".join(e.describe() for e in payload.endpoints)
                    print(f"  {payload.seconds:5.1f}s pool {payload.pool_size} in flight: {stages} "
                          f"(capacity {payload.capacity}); {servers}", flush=True)  # fmt: skip

            if args.other_client:

                def other_client() -> None:
                    if stop_phantom.wait(args.other_at):
                        return
                    servers.phantom(0, args.other_client)
                    print(f"  (another client's {args.other_client} waiting requests appear on endpoint 0)")
                    stop_phantom.wait(args.other_for)
                    servers.phantom(0, 0)
                    print("  (and go away)")

                threading.Thread(target=other_client, daemon=True).start()
            started = time.perf_counter()
            cpu_started = time.process_time()
            with machine:
                outcome = run_generate(config, backend=backend, on_event=on_event)
            total = time.perf_counter() - started
            loop_cpu = time.process_time() - cpu_started
            stop_phantom.set()
            ledger = [json.loads(line) for line in (pool / "runs.jsonl").read_text().splitlines() if line]
            decisions = {e.url: list(e.pacer.decisions) for e in backend._endpoints}
        reports = servers.report()
    finally:
        stop_phantom.set()
        servers.stop()

    first = min(r["first_request"] or started for r in reports)
    last = max(r["last_step_end"] for r in reports)
    span = last - first
    middle = (first + span / 4, last - span / 4)
    step_full = args.step_base + args.step_per_seq * args.max_num_seqs
    max_rate = args.max_num_seqs / step_full * args.endpoints
    tokens = sum(r["tokens"] for r in reports)
    print(f"{args.endpoints} stand-in server(s): max_num_seqs {args.max_num_seqs}, step {args.step_base * 1000:g} ms + "
          f"{args.step_per_seq * 1000:g} ms per sequence; --concurrency {args.concurrency or 'adaptive'}, "
          f"--window {args.window or 'default'}")  # fmt: skip
    print(f"grew a pool to {outcome.pool_size:,} tasks in {total:.1f} s ({outcome.exit_reason}); "
          f"{sum(r['requests'] for r in reports):,} requests, {tokens:,} tokens")  # fmt: skip
    print(f"first round committed {first_round[0] - started:.1f} s after the start" if first_round else "no round")
    server_cpu = reports[0]["cpu_seconds"]
    print(f"CPU: the loop's process {loop_cpu:.1f} s ({loop_cpu / total:.0%} of a core; novelty workers not counted), "
          f"the stand-ins' process {server_cpu:.1f} s over its life ({server_cpu / total:.0%} of a core)")  # fmt: skip
    load = machine.between(*middle)
    print(f"machine: {os.cpu_count()} cores, Python speed {speed:.1f}M loop iterations/s (this process, before "
          "the run); " + (f"in the middle half the cores were {load[0]:.0%} idle, {load[1]:.0%} stolen by the "
          f"hypervisor, and the loop's process used {load[2]:.2f} of a core" if load else "no /proc/stat"))  # fmt: skip
    rate = tokens / span
    print(f"output tokens/s: {rate:,.0f}; the engines' maximum: {max_rate:,.0f}; ratio {rate / max_rate:.2f}")
    endpoints = ledger[-1].get("endpoints", {})
    for i, (report, (url, stats)) in enumerate(zip(reports, endpoints.items(), strict=True)):
        running = _mean(report["history"], *middle, 2)
        waiting = _mean(report["history"], *middle, 3)
        print(f"endpoint {i} ({url}): middle half: mean running {running:.1f} of {args.max_num_seqs} = "
              f"{running / args.max_num_seqs:.3f} full, mean waiting {waiting:.1f}; most queued at once "
              f"{report['max_queued']}; /metrics read {report['metrics_reads']} times")  # fmt: skip
        changes = ", ".join(f"{k} {v}" for k, v in sorted(stats.get("limit_changes", {}).items())) or "none"
        print(f"  ledger: signals {stats.get('signals')}, last limit {stats.get('limit')}, "
              f"{stats.get('tokens_per_second')} tok/s, mean running {stats.get('mean_running')} / waiting "
              f"{stats.get('mean_waiting')} (peak {stats.get('peak_waiting')}) by /metrics; "
              f"limit changes: {changes}")  # fmt: skip
        print("  first changes: " + _changes(decisions[url][:8]))
        later = [d for d in decisions[url][8:] if d.reason in ("waiting", "preemptions", "overload", "latency")]
        if later:
            print("  later shrinks: " + _changes(later[:12]))
        if args.timeline:
            cuts = [first + k * args.timeline for k in range(int(span / args.timeline) + 1)]
            steps = len(report["history"]) / max(span, 1e-9)
            print(f"  timeline ({args.timeline:g} s slices, running/waiting; {steps:.1f} steps/s, a full step "
                  f"{step_full * 1000:.1f} ms): " + " ".join(
                      f"{_mean(report['history'], a, a + args.timeline, 2):.0f}/"
                      f"{_mean(report['history'], a, a + args.timeline, 3):.0f}" for a in cuts))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
