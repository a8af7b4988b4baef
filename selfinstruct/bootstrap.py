"""The Self-Instruct bootstrap loop: one round, and the loop of rounds with its budgets.

One round: sample demonstrations (seed and machine tasks) -> generate instructions -> parse the numbered
list -> heuristic filters -> ROUGE-L novelty -> classify (Yes/No) -> generate instances -> instance
filters -> hand the accepted tasks and the rejected candidates to a sink (the pool). Every stage is one
batched backend call.

This module never prints and never touches files: the caller passes a ``sink`` that persists a round
(:class:`selfinstruct.pool.Pool` in the CLI) and reads progress from the :class:`RoundReport` objects that
:meth:`Bootstrap.rounds` yields. All randomness comes from the one ``random.Random`` given to it, so the
same seed and the same pool state replay the same prompts and per-request seeds.
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from selfinstruct import filters as F
from selfinstruct.backends import Backend, Completion
from selfinstruct.config import GenerateConfig
from selfinstruct.errors import BackendError
from selfinstruct.novelty import NoveltyIndex
from selfinstruct.pool import machine_task_id
from selfinstruct.prompts import (
    PromptTemplates,
    parse_classification,
    parse_input_first,
    parse_instructions,
    parse_output_first,
)
from selfinstruct.task import Instance, Task

# Reason codes that belong to the loop rather than to a filter.
CUT_OFF = "cut_off"  # the last item of a completion that hit max_tokens (counted, not a candidate)
UNPARSEABLE_CLASSIFICATION = "unparseable_classification"  # counted; the task is treated as "No"
UNPARSEABLE_INSTANCE = "unparseable_instance"  # an instance block without Output / Class label
STRAY_MARKER = "stray_marker"  # a field cut short by a misplaced Input:/Output:/Class label: line

# Why a run ended.
TARGET_REACHED = "target_reached"
MAX_ROUNDS = "max_rounds"
MAX_NEW = "max_new"
TIME_LIMIT = "time_limit"
SATURATED = "saturated"
INTERRUPTED = "interrupted"

Sink = Callable[[list[Task], list[dict[str, Any]]], None]
"""Persists one round: the accepted tasks and the rejected candidates (records with ``reject_reason``)."""


@dataclass
class RoundReport:
    """What one round did. ``rejected`` counts candidates by reason; ``notes`` counts non-fatal oddities."""

    round: int
    prompts: int
    candidates: int
    accepted: list[Task]
    rejected: Counter[str]
    notes: Counter[str]
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    pool_size: int


@dataclass
class RunTotals:
    rounds: int = 0
    candidates: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, report: RoundReport) -> None:
        self.rounds += 1
        self.candidates += report.candidates
        self.accepted += len(report.accepted)
        self.rejected.update(report.rejected)
        self.notes.update(report.notes)
        self.prompt_tokens += report.prompt_tokens
        self.completion_tokens += report.completion_tokens


def task_name(instruction: str, words: int = 6) -> str:
    """A snake_case name from the first words of an instruction.

    >>> task_name("Rewrite the sentence below in the passive voice, please.")
    'rewrite_the_sentence_below_in_the'
    """
    tokens = re.findall(r"[a-z0-9]+", instruction.lower())
    return "_".join(tokens[:words]) or "task"


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class _Candidate:
    instruction: str
    prompt_index: int
    novelty_score: float = 0.0
    most_similar: list[dict[str, Any]] = field(default_factory=list)
    is_classification: bool = False
    classification_answer: str = ""


class Bootstrap:
    """The loop. Build it, then iterate :meth:`rounds`; ``stop_reason`` says why it ended.

    ``seeds`` are the seed tasks, ``pool`` the machine tasks already accepted (resuming a run), ``next_index``
    the number of the next machine task id. ``clock`` is injectable for tests of the time budget.
    """

    def __init__(
        self,
        config: GenerateConfig,
        backend: Backend,
        seeds: Sequence[Task],
        pool: Sequence[Task],
        templates: PromptTemplates,
        *,
        rng: random.Random,
        run_id: str,
        next_index: int = 0,
        last_round: int = 0,
        sink: Sink | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not seeds:
            raise ValueError("at least one seed task is needed")
        self.config = config
        self.backend = backend
        self.seeds = list(seeds)
        self.machine = list(pool)
        self.templates = templates
        self.rng = rng
        self.run_id = run_id
        self.next_index = next_index
        self.sink = sink
        # Continue the round numbering of the pool (and of the ledger, which the caller may know better).
        self.last_round = max([last_round, *(int(t.meta.get("round", 0) or 0) for t in self.machine)])
        self.clock = clock
        self.heuristics = F.InstructionHeuristics(blocked_keywords=tuple(config.blocked_keywords))
        self.index = NoveltyIndex(
            [t.instruction for t in self.seeds] + [t.instruction for t in self.machine],
            threshold=config.threshold,
            report_floor=config.similarity_floor,
            top_k=5,
        )
        self.totals = RunTotals()
        self.stop_reason: str | None = None
        self.warnings: list[str] = []
        self._choose_fixed_demos()

    # -- demonstrations ----------------------------------------------------------------------------------

    def _choose_fixed_demos(self) -> None:
        """Pick the classification and instance demonstrations once per run (a fixed prefix caches well)."""
        rng, cfg = self.rng, self.config
        yes = [t for t in self.seeds if t.is_classification is True and t.instances]
        no = [t for t in self.seeds if t.is_classification is not True and t.instances]
        if not yes:
            self.warnings.append(
                "no seed task is marked is_classification: true, so every generated task is treated as "
                "non-classification (instances are generated input-first)"
            )
            self.clf_demos: list[Task] = []
        else:
            n_yes = min(len(yes), max(1, cfg.classification_demos // 2))
            n_no = min(len(no), cfg.classification_demos - n_yes)
            self.clf_demos = rng.sample(yes, n_yes) + rng.sample(no, n_no)
            rng.shuffle(self.clf_demos)

        def short(tasks: list[Task]) -> list[Task]:
            # Long demonstrations eat the context window; prefer the compact ones when there are enough.
            compact = [t for t in tasks if sum(len(i.input) + len(i.output) for i in t.instances) <= 1200]
            return compact if len(compact) >= cfg.instance_demos else tasks

        no_pool, yes_pool = short(no), short(yes)
        self.input_first_demos = rng.sample(no_pool, min(cfg.instance_demos, len(no_pool)))
        self.output_first_demos = rng.sample(yes_pool, min(cfg.instance_demos, len(yes_pool)))

    def sample_demos(self) -> list[str]:
        """Instructions for one prompt: ``num_machine_demos`` from the pool (fewer while it is small, seeds
        fill in) and the rest from the seeds, shuffled."""
        cfg = self.config
        n_machine = min(cfg.num_machine_demos, len(self.machine))
        n_seed = min(cfg.num_seed_demos + cfg.num_machine_demos - n_machine, len(self.seeds))
        demos = [t.instruction for t in self.rng.sample(self.seeds, n_seed)]
        demos += [t.instruction for t in self.rng.sample(self.machine, n_machine)]
        self.rng.shuffle(demos)
        return demos

    def _seeds_for(self, n: int) -> list[int]:
        return [self.rng.randrange(2**31) for _ in range(n)]

    # -- one round ---------------------------------------------------------------------------------------

    def run_round(self, round_number: int) -> RoundReport:
        cfg = self.config
        started = self.clock()
        rejected: Counter[str] = Counter()
        notes: Counter[str] = Counter()
        rejected_records: list[dict[str, Any]] = []
        tokens = [0, 0]

        def call(prompts: list[str], sampling: Any) -> list[Completion]:
            completions = self.backend.generate(prompts, sampling, self._seeds_for(len(prompts)))
            if len(completions) != len(prompts):
                raise BackendError(f"the backend returned {len(completions)} completions for {len(prompts)} prompts")
            for c in completions:
                tokens[0] += c.prompt_tokens
                tokens[1] += c.completion_tokens
            return completions

        def reject(instruction: str, reason: str, **extra: Any) -> None:
            rejected[reason] += 1
            rejected_records.append(
                {
                    "instruction": instruction,
                    "reject_reason": reason,
                    "round": round_number,
                    "run_id": self.run_id,
                    "created_at": _utc_now(),
                    **extra,
                }
            )

        # 1-2. demonstrations and instruction generation
        demo_sets = [self.sample_demos() for _ in range(cfg.batch_size)]
        prompts = [self.templates.instruction_prompt(d) for d in demo_sets]
        completions = call(prompts, cfg.instruction_sampling())

        # 3. parse
        raw: list[_Candidate] = []
        for i, c in enumerate(completions):
            truncated = c.finish_reason == "length"
            items = parse_instructions(c.text, truncated=False)
            if truncated and items:
                notes[CUT_OFF] += 1
                items.pop()
            raw.extend(_Candidate(text, i) for text in items)

        # 4. heuristic filters, then novelty against seeds, pool and earlier candidates of this round
        survivors: list[_Candidate] = []
        for cand in raw:
            reason = self.heuristics(cand.instruction)
            if reason is None:
                survivors.append(cand)
            else:
                detail = {"keyword": self.heuristics.blocked_keyword(cand.instruction)}
                reject(cand.instruction, reason, **(detail if reason == F.BLOCKED_KEYWORD else {}))
        results = self.index.filter_batch([c.instruction for c in survivors], add=False)
        novel: list[_Candidate] = []
        for cand, res in zip(survivors, results, strict=True):
            cand.novelty_score = res.max_score
            cand.most_similar = [{"instruction": m.instruction, "score": m.score} for m in res.top[:5]]
            if res.max_score > cfg.threshold:
                reject(
                    cand.instruction,
                    F.TOO_SIMILAR,
                    max_similarity=res.max_score,
                    most_similar=cand.most_similar,
                )
            else:
                novel.append(cand)

        # 5. classification identification
        if novel and self.clf_demos:
            answers = call(
                [self.templates.classification_prompt(self.clf_demos, c.instruction) for c in novel],
                cfg.classification_sampling(),
            )
            for cand, answer in zip(novel, answers, strict=True):
                verdict = parse_classification(answer.text)
                if verdict is None:
                    notes[UNPARSEABLE_CLASSIFICATION] += 1
                cand.is_classification = bool(verdict)
                cand.classification_answer = answer.text.strip()

        # 6. instance generation (input-first, or output-first for classification tasks)
        accepted: list[Task] = []
        if novel:
            output_first = [c.is_classification and bool(self.output_first_demos) for c in novel]
            instance_prompts = [
                self.templates.instance_prompt(
                    self.output_first_demos if of else self.input_first_demos,
                    c.instruction,
                    classification=of,
                )
                for c, of in zip(novel, output_first, strict=True)
            ]
            outputs = call(instance_prompts, cfg.instance_sampling())
            for cand, of, out in zip(novel, output_first, outputs, strict=True):
                parse = parse_output_first if of else parse_input_first
                parsed = parse(out.text, truncated=out.finish_reason == "length")
                if parsed.unparseable:
                    notes[UNPARSEABLE_INSTANCE] += parsed.unparseable
                if parsed.stray:
                    notes[STRAY_MARKER] += parsed.stray
                # 7. instance filters
                report = F.clean_instances(parsed.instances, cfg.max_instances, classification=of)
                notes.update(report.dropped)
                if report.task_reason is not None:
                    reject(cand.instruction, report.task_reason, raw_instances=out.text)
                    continue
                accepted.append(self._make_task(cand, report.kept, of, round_number, demo_sets))

        # Trim the round so the pool lands exactly on its target and the run on --max-new.
        room = [cfg.num_instructions - len(self.machine)]
        if cfg.max_new is not None:
            room.append(cfg.max_new - self.totals.accepted)
        accepted = accepted[: max(0, min(room))]
        for task in accepted:
            task.id = machine_task_id(self.next_index)
            self.next_index += 1

        # 8. persist, then update the in-memory state
        if self.sink is not None:
            self.sink(accepted, rejected_records)
        for task in accepted:
            self.index.add(task.instruction)
            self.machine.append(task)

        return RoundReport(
            round=round_number,
            prompts=len(prompts),
            candidates=len(raw),
            accepted=accepted,
            rejected=rejected,
            notes=notes,
            prompt_tokens=tokens[0],
            completion_tokens=tokens[1],
            seconds=self.clock() - started,
            pool_size=len(self.machine),
        )

    def _make_task(
        self,
        cand: _Candidate,
        instances: list[Instance],
        output_first: bool,
        round_number: int,
        demos: list[list[str]],
    ) -> Task:
        meta: dict[str, Any] = {
            "source": "machine",
            "run_id": self.run_id,
            "round": round_number,
            "created_at": _utc_now(),
            "model": getattr(self.backend, "model", None),
            # Exact when known; None when a similarity floor hid every neighbour (all below the floor).
            "max_similarity": (cand.novelty_score if cand.most_similar or self.config.similarity_floor == 0 else None),
            "most_similar": cand.most_similar,
            "classification_answer": cand.classification_answer,
            "instance_format": "output_first" if output_first else "input_first",
            "demonstrations": demos[cand.prompt_index],
        }
        return Task(
            instruction=cand.instruction,
            instances=instances,
            is_classification=cand.is_classification,
            name=task_name(cand.instruction),
            meta=meta,
        )

    # -- the loop ----------------------------------------------------------------------------------------

    def _budget_reason(self, started: float, recent: deque[tuple[int, int]]) -> str | None:
        cfg = self.config
        if len(self.machine) >= cfg.num_instructions:
            return TARGET_REACHED
        if cfg.max_new is not None and self.totals.accepted >= cfg.max_new:
            return MAX_NEW
        if cfg.max_rounds is not None and self.totals.rounds >= cfg.max_rounds:
            return MAX_ROUNDS
        limit = cfg.time_limit_seconds
        if limit is not None and self.clock() - started >= limit:
            return TIME_LIMIT
        if len(recent) == cfg.saturation_window:
            accepted = sum(a for a, _ in recent)
            candidates = sum(c for _, c in recent)
            if accepted / max(candidates, 1) < cfg.saturation_min_rate:
                return SATURATED
        return None

    def rounds(self) -> Iterator[RoundReport]:
        """Run rounds until a budget ends the run; yield each round's report after it has been persisted."""
        started = self.clock()
        recent: deque[tuple[int, int]] = deque(maxlen=self.config.saturation_window)
        round_number = self.last_round
        while (reason := self._budget_reason(started, recent)) is None:
            round_number += 1
            report = self.run_round(round_number)
            self.totals.add(report)
            recent.append((len(report.accepted), report.candidates))
            self.last_round = round_number
            yield report
        self.stop_reason = reason
