"""What ``selfinstruct report`` measures about a pool, as one JSON-ready dict (the HTML is drawn from it).

Four sections, after the analyses of the Self-Instruct paper and the questions a user asks before
fine-tuning on a pool:

* **growth**: pool size over time with the runs of the ledger, the acceptance rate over the rounds
  (accepted tasks over accepted plus rejected candidates of each round, from ``tasks.jsonl`` and
  ``rejected.jsonl``, over the rounds the ledger's runs closed; per run from ``runs.jsonl`` when rejected
  candidates were not kept), rejections by reason, tokens and seconds per accepted task. Candidates that
  were ``surplus`` (finished beyond the target) or ``unfinished`` (cancelled when the run stopped) were
  never judged: they are counted apart, never as rejections;
* **diversity**: ROUGE-L F of each machine instruction to its most similar *seed* instruction, exactly
  (:meth:`NoveltyIndex.nearest_all`; the stored ``max_similarity`` is against seeds *and* the pool at the
  time, a different number, shown beside it), the verb–noun structure (:mod:`selfinstruct.views.verbnoun`),
  leading words, distinct n-grams (distinct-n: distinct n-grams over all n-grams, on rouge tokens);
* **shape**: word counts of instructions, non-empty inputs and outputs (the paper's Figure 3), share of
  classification tasks and of tasks whose every input is empty, instances per task, the answers to the
  classification question and the label counts of classification tasks;
* **quality** (:mod:`selfinstruct.views.quality`): the judge's scores where a judge scored the pool, the paper's
  Table 1, cheap signals that need no judge, and the ratings of a filled rating sheet
  (:mod:`selfinstruct.views.rating`) when one is given;
* **samples**: a seeded random sample, the tasks closest to a seed, the most common rejects per reason;
* **examples**: a few seeded example tasks behind every bar: each top verb and verb–noun pair, each
  length bin, each ROUGE-L bin.

:func:`measure_pool` also keeps one row of measures per task (:func:`write_parquet` writes them), and
:func:`build_reports` measures two pools for ``--against``, adding distinct-n on a random subsample of the
larger pool the size of the smaller one.

``tasks.jsonl`` is read once, as a stream: above :data:`SAMPLE_ABOVE` tasks the per-task statistics are
measured on a seeded reservoir sample of that many tasks while every count stays exact (the report's
``sampled`` entry and a warning on the page say which), so a pool of any size is reported in bounded memory.

Optionally embedding diversity (:mod:`selfinstruct.views.embeddings`). Reads only: never takes the pool's lock,
never repairs a file (a torn last line is skipped with a warning, as ``status`` does). Nothing here prints.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from selfinstruct.errors import ConfigError, InputError, PoolError
from selfinstruct.gates.novelty import NoveltyIndex, rouge_tokens_many
from selfinstruct.paths import default_seeds_path
from selfinstruct.pool.directory import Pool
from selfinstruct.pool.task import Task, load_seed_tasks
from selfinstruct.views import quality
from selfinstruct.views.verbnoun import verb_noun_pairs

SCHEMA = "selfinstruct-report/2"
ROUGE_BINS = 20  # histogram of ROUGE-L F over [0, 1], bins of 0.05 as in the paper's Figure 4
MAX_GROWTH_POINTS = 400  # pool size over time is thinned to this many points
MAX_ACCEPTANCE_POINTS = 120  # rounds are grouped into at most this many points
NGRAM_ORDERS = (1, 2, 3, 4)
# Word-count histograms: (bin width, upper edge); the last bin holds everything from the edge up ("60+").
LENGTH_BINS = {"instruction": (2, 60), "input": (5, 150), "output": (5, 150)}
TEXT_LIMIT = 600  # characters of a task's text kept in samples
EXAMPLE_LIMIT = 300  # characters of an example's instruction
EDGE_TOLERANCE = 1e-9  # a value this close to a bin edge counts as on it (0.3 computed as 0.29999999999999993)
# Candidates that were never judged: finished beyond the target, or cancelled when the run stopped.
UNUSED_REASONS = ("surplus", "unfinished")
# Above this many tasks the statistics that need every task in memory at once (ROUGE-L to the seeds,
# verb-noun pairs, distinct n-grams, the quality signals and judge scores, samples, examples and the
# per-task Parquet rows) are measured on a seeded uniform sample of this many tasks (reservoir sampling
# while the file streams by), and the report says so. Counts stay exact over the whole pool: tasks,
# instances, word-length distributions, classification, labels, empty inputs, leading words, acceptance
# and growth. A pool of this size needs about 0.5 GB to measure; a 1,000,000-task pool then takes no more.
SAMPLE_ABOVE = 100_000
Progress = Callable[[str, int, int], None]  # (what, done, total)


@dataclass
class ReportOptions:
    """Everything ``selfinstruct report`` can be asked; the CLI fills one of these."""

    seeds: str | None = None  # seed file; None: the one the pool was grown from, else ours
    parser: str = "auto"  # verb-noun method: auto, spacy, heuristic
    spacy_model: str | None = None  # None: with auto, any installed en_core_web_* (sm first); with spacy, sm
    embeddings: bool = False
    embedding_model: str | None = None
    embedding_limit: int = 10_000  # nearest-neighbour queries (a seeded sample beyond); all are embedded
    sample_size: int = 12
    closest: int = 10
    reject_examples: int = 3
    examples: int = 3  # example tasks behind each bar
    seed: int = 0
    workers: int = 1
    ratings: str | None = None  # a filled rating sheet (CSV or JSONL) to read back
    max_tasks: int = SAMPLE_ABOVE  # measure a seeded sample of this many tasks beyond (see SAMPLE_ABOVE)
    encoder: Any = field(default=None, repr=False)  # an object with sentence-transformers' encode(), else a model
    progress: Progress | None = field(default=None, repr=False)


# ------------------------------------------------------------------------------------------------ helpers


def _round(x: float, digits: int = 4) -> float:
    return round(float(x), digits) if math.isfinite(x) else 0.0


def _parse_time(value: Any) -> float | None:
    """Seconds since the epoch of an ISO 8601 time (naive times read as UTC), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _opt_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _clip(text: str, limit: int = TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summarize(values: Sequence[float]) -> dict[str, float]:
    """count, mean, min, p10, median, p90, max of ``values`` (zeros when empty)."""
    if not values:
        return {"count": 0, "mean": 0.0, "min": 0.0, "p10": 0.0, "median": 0.0, "p90": 0.0, "max": 0.0}
    arr = np.asarray(values, dtype=np.float64)
    p10, median, p90 = np.percentile(arr, [10, 50, 90])
    return {
        "count": len(arr),
        "mean": _round(arr.mean()),
        "min": _round(arr.min()),
        "p10": _round(p10),
        "median": _round(median),
        "p90": _round(p90),
        "max": _round(arr.max()),
    }


def bin_indices(values: Sequence[float], edges: Sequence[float], *, overflow: bool = False) -> np.ndarray:
    """The bin of each value (``[edges[i], edges[i+1])``, the last bin closed; -1 outside). A value within
    :data:`EDGE_TOLERANCE` of an edge counts as on it, so a score of exactly 0.3 computed as
    0.29999999999999993 lands in the bin that starts at 0.3. With ``overflow`` values above the last edge
    go to the last bin."""
    arr = np.asarray(values, dtype=np.float64)
    e = np.asarray(edges, dtype=np.float64)
    bins = len(e) - 1
    if overflow:
        arr = np.minimum(arr, e[-1])
    idx = np.searchsorted(e, arr + EDGE_TOLERANCE, side="right") - 1
    idx = np.where(arr <= e[-1] + EDGE_TOLERANCE, np.minimum(idx, bins - 1), -1)
    return np.where(arr >= e[0] - EDGE_TOLERANCE, idx, -1)


def histogram(values: Sequence[float], edges: Sequence[float], *, overflow: bool = False) -> dict[str, Any]:
    """Counts of ``values`` per bin ``[edges[i], edges[i+1])`` (see :func:`bin_indices`). With ``overflow``
    the last bin takes every value from its lower edge up (drawn apart, labelled "60+")."""
    idx = bin_indices(values, edges, overflow=overflow)
    counts = np.bincount(idx[idx >= 0], minlength=len(edges) - 1) if len(idx) else np.zeros(len(edges) - 1, int)
    return {"edges": [_round(e) for e in edges], "counts": counts.tolist(), "overflow": overflow}


def _length_edges(kind: str) -> list[int]:
    width, top = LENGTH_BINS[kind]
    return [*range(0, top + width, width), top + width]


def _length_histogram(values: Sequence[int], kind: str) -> dict[str, Any]:
    return histogram(values, _length_edges(kind), overflow=True)


def _first_word(text: str) -> str:
    words = text.split()
    return words[0].strip(",.:;!?\"'()[]").lower() if words else ""


def _answer_key(answer: Any) -> str:
    """The classification question's answer as "yes", "no", "(none)" or "other"."""
    if not isinstance(answer, str) or not answer.strip():
        return "(none)"
    word = answer.strip().split()[0].strip(".,:;!\"'").lower()
    return word if word in ("yes", "no") else "other"


def _instruction_key(text: str) -> str:
    return " ".join(text.casefold().split())


# ------------------------------------------------------------------------------------------------ seeds


def resolve_seeds(pool: Pool, explicit: str | None) -> tuple[Path, list[str]]:
    """The seed file to compare against, and warnings: ``explicit``, else the file the pool's
    ``config.json`` names (checked against its stored fingerprint), else the project's own seeds."""
    warnings: list[str] = []
    if explicit is not None:
        return Path(explicit), warnings
    stored = pool.read_config() or {}
    config = stored.get("config") if isinstance(stored.get("config"), dict) else {}
    named = config.get("seeds") if isinstance(config, dict) else None
    want = stored.get("seeds_hash")
    if isinstance(named, str) and named:
        path = Path(named)
        if path.is_file():
            if isinstance(want, str) and hashlib.sha256(path.read_bytes()).hexdigest()[:16] != want:
                warnings.append(
                    f"the seed file {path} has changed since the pool was grown from it (fingerprint differs); "
                    "similarities to seeds are against its current content"
                )
            return path, warnings
        warnings.append(f"the pool was grown from seeds {named}, which is not found here; using our seed file")
    default = default_seeds_path()
    if isinstance(want, str) and default.is_file() and hashlib.sha256(default.read_bytes()).hexdigest()[:16] != want:
        warnings.append(f"the pool was not grown from {default}; pass --seeds FILE for exact seed similarities")
    return default, warnings


# ------------------------------------------------------------------------------------------------ growth


def _sum_counts(value: Any) -> int | None:
    """The sum of a ledger's ``{"reason": count}`` field, or None when the field is not there."""
    return sum(_int(v) for v in value.values()) if isinstance(value, dict) else None


def _runs_section(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per run and in total: accepted, rejected (judged and turned down), unused (surplus or unfinished:
    never judged), and the acceptance rate accepted / (accepted + rejected)."""
    rows = []
    total = Counter[str]()
    for run in runs:
        accepted, candidates = _int(run.get("accepted")), _int(run.get("candidates"))
        rejected = _sum_counts(run.get("rejected"))
        unused = _sum_counts(run.get("surplus")) or 0
        if rejected is None:  # an old ledger line: no reasons, so no split of the candidates
            rejected = max(candidates - accepted - unused, 0)
        decided = accepted + rejected
        tokens = _int(run.get("prompt_tokens")) + _int(run.get("completion_tokens"))
        seconds = _number(run.get("seconds"))
        total.update(
            accepted=accepted,
            candidates=candidates,
            rejected=rejected,
            unused=unused,
            tokens=tokens,
            rounds=_int(run.get("rounds")),
            prompt_tokens=_int(run.get("prompt_tokens")),
            completion_tokens=_int(run.get("completion_tokens")),
        )
        rows.append(
            {
                "run_id": str(run.get("run_id", "")),
                "started_at": run.get("started_at"),
                "ended_at": run.get("ended_at"),
                "started": _parse_time(run.get("started_at")),
                "exit_reason": run.get("exit_reason"),
                "model": run.get("model"),
                "rounds": _int(run.get("rounds")),
                "last_round": _opt_int(run.get("last_round")),
                "pool_before": _int(run.get("pool_before")),
                "pool_after": _int(run.get("pool_after")),
                "accepted": accepted,
                "rejected": rejected,
                "unused": unused,
                "candidates": candidates,
                "acceptance_rate": _round(accepted / decided) if decided else 0.0,
                "seconds": _round(seconds, 1),
                "tokens": tokens,
                "tokens_per_accepted": _round(tokens / accepted, 1) if accepted else None,
                "seconds_per_accepted": _round(seconds / accepted, 3) if accepted else None,
            }
        )
    seconds_total = sum(_number(r.get("seconds")) for r in runs)
    accepted = total["accepted"]
    decided = accepted + total["rejected"]
    return {
        "runs": rows,
        "totals": {
            "runs": len(runs),
            "rounds": total["rounds"],
            "candidates": total["candidates"],
            "accepted": accepted,
            "rejected": total["rejected"],
            "unused": total["unused"],
            "acceptance_rate": _round(accepted / decided) if decided else 0.0,
            "prompt_tokens": total["prompt_tokens"],
            "completion_tokens": total["completion_tokens"],
            "seconds": _round(seconds_total, 1),
            "tokens_per_accepted": _round(total["tokens"] / accepted, 1) if accepted else None,
            "seconds_per_accepted": _round(seconds_total / accepted, 3) if accepted else None,
        },
    }


def ledger_rounds(runs: Sequence[dict[str, Any]]) -> set[int] | None:
    """The rounds the ledger's runs closed (``last_round - rounds + 1 .. last_round`` of each run; round
    numbers continue across runs), or None when no run records its last round (an older ledger)."""
    out: set[int] = set()
    known = False
    for run in runs:
        last, count = _opt_int(run.get("last_round")), _int(run.get("rounds"))
        if last is None:
            continue
        known = True
        out.update(range(last - count + 1, last + 1))
    return out if known else None


def _size_over_time(created: Iterable[float]) -> list[list[float]]:
    times = np.sort(np.fromiter(created, dtype=np.float64)).tolist()
    if not times:
        return []
    n = len(times)
    if n <= MAX_GROWTH_POINTS:
        return [[t, i + 1] for i, t in enumerate(times)]
    picks = sorted({round(i * (n - 1) / (MAX_GROWTH_POINTS - 1)) for i in range(MAX_GROWTH_POINTS)})
    return [[times[i], i + 1] for i in picks]


def _acceptance_by_round(
    accepted: Counter[int], rejected: Counter[int], unused: Counter[int], rounds: Sequence[int]
) -> list[dict[str, Any]]:
    if not rounds:
        return []
    group = max(1, math.ceil(len(rounds) / MAX_ACCEPTANCE_POINTS))
    points = []
    for i in range(0, len(rounds), group):
        chunk = rounds[i : i + group]
        acc = sum(accepted[r] for r in chunk)
        rej = sum(rejected[r] for r in chunk)
        points.append(
            {
                "first_round": chunk[0],
                "last_round": chunk[-1],
                "accepted": acc,
                "rejected": rej,
                "unused": sum(unused[r] for r in chunk),
                "acceptance_rate": _round(acc / (acc + rej)) if acc + rej else None,
            }
        )
    return points


# --------------------------------------------------------------------------------------------- the report


@dataclass
class _Whole:
    """What the report counts exactly over every task while ``tasks.jsonl`` streams by, in compact form
    (numbers in typed arrays, texts only as clipped keys), beside a seeded sample of the tasks themselves."""

    sample: list[Task]
    n: int = 0
    created: Any = None  # array("d"): the creation time of every task that records one
    accepted_by_round: Counter[int] = field(default_factory=Counter)
    instruction_words: Any = None
    input_words: Any = None
    output_words: Any = None
    per_task: Counter[int] = field(default_factory=Counter)
    classification: int = 0
    unknown: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    empty_input: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    leading: Counter[str] = field(default_factory=Counter)
    stored_scores: Any = None  # array("d"): every recorded max_similarity
    ids: set[str] | None = None  # every id, kept only when a rating sheet is read back

    @property
    def sampled(self) -> bool:
        return len(self.sample) < self.n


def _stream_tasks(pool: Pool, limit: int, seed: int, *, keep_ids: bool) -> _Whole:
    """One pass over the pool's tasks: exact counts of every task, and a seeded uniform sample of at most
    ``limit`` tasks (reservoir sampling, Vitter's algorithm R), in file order. A pool of ``limit`` tasks
    or fewer is kept whole, so its report is exact throughout."""
    from array import array

    whole = _Whole(sample=[], ids=set() if keep_ids else None)
    whole.instruction_words, whole.input_words, whole.output_words = array("q"), array("q"), array("q")
    created = array("d")
    stored = array("d")
    rng = random.Random(seed)
    picked: list[tuple[int, Task]] = []
    for task in pool.iter_tasks(strict=True):
        i = whole.n
        whole.n += 1
        if i < limit:
            picked.append((i, task))
        else:
            j = rng.randrange(i + 1)
            if j < limit:
                picked[j] = (i, task)
        when = _parse_time(task.meta.get("created_at"))
        if when is not None:
            created.append(when)
        score = task.meta.get("max_similarity")
        if isinstance(score, (int, float)) and not isinstance(score, bool):
            stored.append(float(score))
        round_number = _opt_int(task.meta.get("round"))
        if round_number is not None:
            whole.accepted_by_round[round_number] += 1
        whole.instruction_words.append(len(task.instruction.split()))
        empty = True
        for inst in task.instances:
            if words := len(inst.input.split()):
                whole.input_words.append(words)
            whole.output_words.append(len(inst.output.split()))
            empty = empty and not inst.input.strip()
        whole.empty_input += empty
        whole.per_task[len(task.instances)] += 1
        if task.is_classification:
            whole.classification += 1
            whole.labels.update(_clip(inst.output.strip(), 80) for inst in task.instances)
        elif task.is_classification is None:
            whole.unknown += 1
        whole.answers[_answer_key(task.meta.get("classification_answer"))] += 1
        if word := _clip(_first_word(task.instruction), 40):
            whole.leading[word] += 1
        if whole.ids is not None and task.id:
            whole.ids.add(task.id)
    picked.sort(key=lambda pair: pair[0])
    whole.sample = [task for _, task in picked]
    whole.created, whole.stored_scores = created, stored
    return whole


def _exact_counts(report: dict[str, Any], whole: _Whole) -> None:
    """For a sampled pool, put the exact whole-pool counts over those measured on the sample, and say which
    figures are sampled: in the report's ``sampled`` entry and as a warning shown on the page. (A pool kept
    whole was measured exactly already, labels unclipped; nothing to do.)"""
    if not whole.sampled:
        return
    n = whole.n
    report["pool"]["tasks"] = n
    shape = report["shape"]
    words = {"instruction": whole.instruction_words, "input": whole.input_words, "output": whole.output_words}
    instances = len(whole.output_words)
    label_total = sum(whole.labels.values())
    shape.update(
        {
            "tasks": n,
            "instances": instances,
            "lengths": {
                kind: {"summary": summarize(values), "histogram": _length_histogram(values, kind)}
                for kind, values in words.items()
            },
            "classification": {
                "count": whole.classification,
                "share": _round(whole.classification / n) if n else 0.0,
                "unknown": whole.unknown,
                "answers": dict(whole.answers.most_common()),
            },
            "empty_input": {"count": whole.empty_input, "share": _round(whole.empty_input / n) if n else 0.0},
            "instances_per_task": {
                "counts": {str(k): v for k, v in sorted(whole.per_task.items())},
                "mean": _round(instances / n) if n else 0.0,
            },
            "labels": {
                "distinct": len(whole.labels),
                "total": label_total,
                "top": [{"label": lab, "count": c} for lab, c in whole.labels.most_common(15)],
                "majority_share": _round(whole.labels.most_common(1)[0][1] / label_total) if label_total else 0.0,
            },
        }
    )
    report["diversity"]["leading_words"] = {
        "distinct": len(whole.leading),
        "top": [{"word": w, "count": c} for w, c in whole.leading.most_common(20)],
    }
    stored = report["diversity"]["stored_max_similarity"]
    stored["known"] = len(whole.stored_scores)
    stored["summary"] = summarize(whole.stored_scores)
    stored["histogram"] = histogram(whole.stored_scores, [i / ROUGE_BINS for i in range(ROUGE_BINS + 1)])

    def mean(values: Any) -> float | None:
        return round(sum(values) / len(values), 2) if len(values) else None

    report["quality"]["table1"].update(
        {
            "instructions": n,
            "classification": whole.classification,
            "non_classification": n - whole.classification - whole.unknown,
            "unknown_type": whole.unknown,
            "instances": instances,
            "instances_empty_input": instances - len(whole.input_words),
            "mean_instruction_words": mean(whole.instruction_words),
            "mean_input_words": mean(whole.input_words),
            "mean_output_words": mean(whole.output_words),
        }
    )
    measured = (
        "ROUGE-L to the seeds, verb-noun pairs, distinct n-grams, quality signals, judge scores, samples, examples"
        " and the per-task Parquet rows"
    )
    report["sampled"] = {
        "tasks": len(whole.sample),
        "of": n,
        "seed": report["samples"]["seed"],
        "sampled": measured,
        "exact": "task, instance, label and leading-word counts, word lengths, classification, acceptance, growth",
    }
    report["warnings"].append(
        f"a large pool: {measured} are measured on a seeded random sample of {len(whole.sample):,} of its "
        f"{n:,} tasks (--seed {report['samples']['seed']}); counts, word lengths, labels, leading words, "
        "acceptance and growth are exact over every task"
    )


@dataclass
class _Rejects:
    by_reason: Counter[str]
    by_round: Counter[int]
    unused: Counter[str]  # surplus / unfinished: never judged
    unused_by_round: Counter[int]
    texts: dict[str, Counter[str]]  # reason -> instruction key -> count
    example: dict[tuple[str, str], dict[str, Any]]  # (reason, key) -> the first record seen


def _read_rejects(records: Iterable[dict[str, Any]]) -> _Rejects:
    rejects = _Rejects(Counter(), Counter(), Counter(), Counter(), {}, {})
    for record in records:
        reason = record.get("reject_reason")
        reason = reason if isinstance(reason, str) and reason else "unknown"
        round_number = _opt_int(record.get("round"))
        if reason in UNUSED_REASONS:
            rejects.unused[reason] += 1
            if round_number is not None:
                rejects.unused_by_round[round_number] += 1
            continue
        rejects.by_reason[reason] += 1
        if round_number is not None:
            rejects.by_round[round_number] += 1
        text = record.get("instruction")
        if isinstance(text, str):
            key = _instruction_key(text)
            rejects.texts.setdefault(reason, Counter())[key] += 1
            rejects.example.setdefault((reason, key), record)
    return rejects


def _reject_samples(rejects: _Rejects, per_reason: int) -> list[dict[str, Any]]:
    out = []
    for reason, count in rejects.by_reason.most_common():
        examples = []
        for key, times in rejects.texts.get(reason, Counter()).most_common(per_reason):
            record = rejects.example[(reason, key)]
            example: dict[str, Any] = {"instruction": _clip(str(record.get("instruction", ""))), "times": times}
            nearest = record.get("most_similar")
            if isinstance(nearest, list) and nearest and isinstance(nearest[0], dict):
                example["most_similar"] = _clip(str(nearest[0].get("instruction", "")))
                example["score"] = _round(_number(nearest[0].get("score")))
            if isinstance(record.get("keyword"), str):
                example["keyword"] = _clip(record["keyword"], 80)
            examples.append(example)
        out.append({"reason": _clip(reason, 80), "count": count, "examples": examples})
    return out


def _task_sample(task: Task) -> dict[str, Any]:
    return {
        "id": task.id,
        "instruction": _clip(task.instruction),
        "is_classification": task.is_classification,
        "instances": [{"input": _clip(i.input, 300), "output": _clip(i.output, 300)} for i in task.instances[:8]],
        "more_instances": max(0, len(task.instances) - 8),
    }


# Below this many distinct tokens a 4-gram's base-V key fits in 63 bits (55,000**4 < 2**63).
_DIRECT_VOCAB = 55_000


def _count_distinct(keys: np.ndarray) -> int:
    if not len(keys):
        return 0
    ordered = np.sort(keys)
    return int(np.count_nonzero(ordered[1:] != ordered[:-1])) + 1


def _ngrams(tokens: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Distinct and total n-grams (n = 1..4) within instructions, counted exactly with integer keys.

    Tokens become ids below ``V``; an n-gram is the base-``V`` number of its ids, which fits in 63 bits for
    n = 4 while ``V`` < 55,000. A larger vocabulary replaces each leading bigram by its dense rank first,
    so that the keys still fit. Distinct n-grams always get distinct keys.
    """
    lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
    vocab: dict[str, int] = {}
    ids = np.asarray([vocab.setdefault(t, len(vocab)) for t in itertools.chain.from_iterable(tokens)], dtype=np.int64)
    # An n-gram starts at a token with at least n tokens left in its own instruction.
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    left = np.repeat(lengths, lengths) - (np.arange(len(ids)) - starts)
    size = max(len(vocab), 1)
    out = {}
    keys = ids
    pairs = ids[:-1] * size + ids[1:] if len(ids) > 1 else ids[:0]
    if size >= _DIRECT_VOCAB and len(pairs):  # a big vocabulary: replace bigrams by their dense rank
        pairs = np.unique(pairs, return_inverse=True)[1].astype(np.int64).reshape(-1)
    pair_base = int(pairs.max(initial=0)) + 1 if size >= _DIRECT_VOCAB else size * size
    for n in NGRAM_ORDERS:
        if n == 2:
            keys = pairs
        elif n == 3:
            keys = pairs[:-1] * size + ids[2:] if len(ids) > 2 else ids[:0]
        elif n == 4:
            keys = pairs[:-2] * pair_base + pairs[2:] if len(ids) > 3 else ids[:0]
        valid = keys[left[: len(keys)] >= n]
        distinct, total = _count_distinct(valid), len(valid)
        out[str(n)] = {"distinct": distinct, "total": total, "ratio": _round(distinct / total) if total else 0.0}
    return out


def _example(task: Task, detail: str = "") -> dict[str, Any]:
    out = {"id": task.id, "instruction": _clip(task.instruction, EXAMPLE_LIMIT)}
    if detail:
        out["detail"] = _clip(detail, EXAMPLE_LIMIT)
    return out


class _Picker:
    """Up to ``k`` example task indices per key, the tasks visited in one seeded random order."""

    def __init__(self, n: int, k: int, seed: int) -> None:
        self.order = np.random.default_rng(seed).permutation(n).tolist()
        self.k = k

    def pick(self, keys_of: Callable[[int], Iterable[Any]]) -> dict[Any, list[int]]:
        out: dict[Any, list[int]] = {}
        for i in self.order:
            for key in keys_of(i):
                got = out.setdefault(key, [])
                if len(got) < self.k and i not in got:
                    got.append(i)
        return out


@dataclass
class Measured:
    """One pool's report, its per-task measures (columns of equal length, for Parquet), and its tokens."""

    report: dict[str, Any]
    rows: dict[str, list[Any]]
    tokens: list[list[str]]
    labels: Counter[str]  # every label of the classification tasks (clipped), for --against
    leading: Counter[str] | None = None  # every task's leading word, when the rows hold a sample only


def build_report(directory: str | Path, options: ReportOptions | None = None) -> dict[str, Any]:
    """Read the pool at ``directory`` and measure it (see the module docstring). Raises PoolError for a
    missing or damaged pool, InputError for a bad seed file, ConfigError for an unavailable optional part."""
    return measure_pool(directory, options).report


def measure_pool(directory: str | Path, options: ReportOptions | None = None) -> Measured:
    """:func:`build_report`, keeping the per-task measures too."""
    opts = options or ReportOptions()
    started = time.perf_counter()
    pool = Pool(directory)
    if not pool.directory.is_dir():
        raise PoolError(f"{pool.directory}: no such pool directory")
    if not pool.tasks_path.exists() and not pool.runs_path.exists():
        raise PoolError(f"{pool.directory}: not a pool (neither tasks.jsonl nor runs.jsonl is there)")
    whole = _stream_tasks(pool, max(1, opts.max_tasks), opts.seed, keep_ids=opts.ratings is not None)
    tasks = whole.sample
    runs = pool.read_runs()
    stored = pool.read_config() or {}
    seeds_path, warnings = resolve_seeds(pool, opts.seeds)
    try:
        seeds = load_seed_tasks(seeds_path)
    except InputError as exc:
        raise InputError(exc.path, exc.line, f"{exc.problem} (the seed file the report compares with)") from None
    rejects = _read_rejects(pool.iter_rejected())
    judge_records = quality.judge_records(tasks, pool.iter_judgements())
    warnings.extend(pool.warnings)
    timings: dict[str, float] = {}  # wall seconds per stage
    clock = started

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 3)
        clock = now

    lap("read")
    instructions = [t.instruction for t in tasks]
    tokens = rouge_tokens_many(instructions)
    n = len(tasks)
    rounds_of = [_opt_int(t.meta.get("round")) for t in tasks]

    # -- growth
    growth = _runs_section(runs)
    accepted_by_round = whole.accepted_by_round
    ledger_rejected: Counter[str] = Counter()
    ledger_unused: Counter[str] = Counter()
    for run in runs:
        for name, into in (("rejected", ledger_rejected), ("surplus", ledger_unused)):
            counts = run.get(name)
            if isinstance(counts, dict):
                into.update({str(k): _int(v) for k, v in counts.items()})
    for reason in UNUSED_REASONS:  # an older ledger filed them among the rejections
        if reason in ledger_rejected:
            ledger_unused[reason] += ledger_rejected.pop(reason)
    growth["size_over_time"] = _size_over_time(whole.created)
    closed = ledger_rounds(runs)
    if rejects.by_round:
        seen = set(accepted_by_round) | set(rejects.by_round)
        rounds = sorted(closed if closed is not None else seen)
        growth["acceptance"] = {
            "by": "round",
            "rounds_from": "ledger" if closed is not None else "records",
            "outside": {
                "rounds": len(seen - set(rounds)),
                "accepted": sum(v for r, v in accepted_by_round.items() if r not in rounds),
                "rejected": sum(v for r, v in rejects.by_round.items() if r not in rounds),
            },
            "points": _acceptance_by_round(accepted_by_round, rejects.by_round, rejects.unused_by_round, rounds),
        }
    else:
        growth["acceptance"] = {
            "by": "run",
            "points": [
                {
                    "run_id": r["run_id"],
                    "accepted": r["accepted"],
                    "rejected": r["rejected"],
                    "unused": r["unused"],
                    "candidates": r["candidates"],
                    "acceptance_rate": r["acceptance_rate"] if r["accepted"] + r["rejected"] else None,
                }
                for r in growth["runs"]
            ],
        }
    growth["rejections"] = {
        "ledger": dict(ledger_rejected.most_common()),
        "logged": dict(rejects.by_reason.most_common()),
        "unused_ledger": dict(ledger_unused.most_common()),
        "unused_logged": dict(rejects.unused.most_common()),
    }
    lap("growth")

    # -- diversity
    index = NoveltyIndex([s.instruction for s in seeds], top_k=1, report_floor=0.0)
    seed_scores, seed_positions = index.nearest_all(instructions, tokens=tokens, workers=opts.workers)
    lap("seed_rouge")
    rouge_edges = [i / ROUGE_BINS for i in range(ROUGE_BINS + 1)]
    rouge_bins = bin_indices(seed_scores.tolist(), rouge_edges)
    recorded = [t.meta.get("max_similarity") for t in tasks]
    stored_scores = [float(v) for v in recorded if isinstance(v, (int, float)) and not isinstance(v, bool)]
    verb_noun = verb_noun_pairs(instructions, method=opts.parser, model=opts.spacy_model, progress=opts.progress)
    lap("verb_noun")
    vn_summary = verb_noun.summary()
    leading_words = [_clip(_first_word(t), 40) for t in instructions]
    leading = Counter(w for w in leading_words if w)
    diversity: dict[str, Any] = {
        "seed_rouge": {
            "seeds": len(seeds),
            "summary": summarize(seed_scores.tolist()),
            "histogram": histogram(seed_scores.tolist(), rouge_edges),
            "share_above_0_5": _round(float((seed_scores > 0.5).mean())) if n else 0.0,
        },
        "stored_max_similarity": {
            "note": "ROUGE-L F against the seeds and the pool at generation time, as recorded in tasks.jsonl",
            "known": len(stored_scores),
            "summary": summarize(stored_scores),
            "histogram": histogram(stored_scores, rouge_edges),
        },
        "verb_noun": vn_summary,
        "leading_words": {
            "distinct": len(leading),
            "top": [{"word": w, "count": c} for w, c in leading.most_common(20)],
        },
        "distinct_ngrams": _ngrams(tokens),
    }
    lap("diversity")

    # -- shape
    instruction_words = [len(t.instruction.split()) for t in tasks]
    # Word counts of every instance, split once: non-empty inputs only (as the paper counts them).
    task_inputs = [[w for i in t.instances if (w := len(i.input.split()))] for t in tasks]
    task_outputs = [[len(i.output.split()) for i in t.instances] for t in tasks]
    input_words = list(itertools.chain.from_iterable(task_inputs))
    output_words = list(itertools.chain.from_iterable(task_outputs))
    classification = [t for t in tasks if t.is_classification]
    labels = Counter(i.output.strip() for t in classification for i in t.instances)
    label_total = sum(labels.values())
    per_task = Counter(len(t.instances) for t in tasks)
    shape = {
        "tasks": n,
        "instances": sum(len(t.instances) for t in tasks),
        "lengths": {
            kind: {"summary": summarize(values), "histogram": _length_histogram(values, kind)}
            for kind, values in (("instruction", instruction_words), ("input", input_words), ("output", output_words))
        },
        "classification": {
            "count": len(classification),
            "share": _round(len(classification) / n) if n else 0.0,
            "unknown": sum(t.is_classification is None for t in tasks),
            "answers": dict(Counter(_answer_key(t.meta.get("classification_answer")) for t in tasks).most_common()),
        },
        "empty_input": {
            "count": (empty := sum(all(not i.input.strip() for i in t.instances) for t in tasks)),
            "share": _round(empty / n) if n else 0.0,
        },
        "instances_per_task": {
            "counts": {str(k): v for k, v in sorted(per_task.items())},
            "mean": _round(statistics.fmean(len(t.instances) for t in tasks)) if n else 0.0,
        },
        "labels": {
            "distinct": len(labels),
            "total": label_total,
            "top": [{"label": _clip(lab, 80), "count": c} for lab, c in labels.most_common(15)],
            "majority_share": _round(labels.most_common(1)[0][1] / label_total) if label_total else 0.0,
        },
    }

    # -- quality
    flags = quality.signal_flags(tasks)
    judge = quality.judge_section(tasks, judge_records, rounds_of)
    ratings = None
    if opts.ratings is not None:
        from selfinstruct.views.rating import read_ratings

        ratings = read_ratings(opts.ratings, whole.ids or set())
        if ratings["unknown_tasks"]:
            warnings.append(
                f"{ratings['unknown_tasks']} row(s) of the rating sheet {opts.ratings} name tasks this pool does "
                "not hold; left out"
            )
    quality_section = {
        "table1": quality.table1(tasks, input_words, output_words, instruction_words),
        "signals": quality.signals_section(tasks, flags, opts.examples, _clip),
        "judge": judge,
        "ratings": ratings,
    }
    lap("shape_quality")

    # -- samples
    rng = random.Random(opts.seed)
    sample = sorted(rng.sample(range(n), min(opts.sample_size, n)))
    order: list[int] = np.argsort(-seed_scores, kind="stable")[: opts.closest].tolist()
    seed_texts = [s.instruction for s in seeds]

    def nearest_seed(i: int) -> str:
        return seed_texts[seed_positions[i]] if seed_positions[i] >= 0 else ""

    samples = {
        "seed": opts.seed,
        "random": [_task_sample(tasks[i]) for i in sample],
        "closest_to_seed": [
            {
                "id": tasks[i].id,
                "instruction": _clip(tasks[i].instruction),
                "seed": _clip(nearest_seed(i)),
                "score": _round(seed_scores[i]),
            }
            for i in map(int, order)
        ],
        "rejects": _reject_samples(rejects, opts.reject_examples),
    }

    # -- examples behind the charts
    picker = _Picker(n, opts.examples, opts.seed)
    top_verbs = {v["verb"] for v in vn_summary["top"]}
    top_pairs = {(v["verb"], x["noun"]) for v in vn_summary["top"] for x in v["nouns"]}
    pairs = verb_noun.pairs
    by_verb = picker.pick(lambda i: [pairs[i][0]] if pairs[i][0] in top_verbs else [])
    by_pair = picker.pick(lambda i: [pairs[i]] if pairs[i] in top_pairs else [])
    inst_bins = bin_indices(instruction_words, _length_edges("instruction"), overflow=True)
    input_edges, output_edges = _length_edges("input"), _length_edges("output")

    # The bins each task's instances fall in, binned in one go: (task index, words) of every instance.
    owners_in = [k for k, words in enumerate(task_inputs) for _ in words]
    owners_out = [k for k, words in enumerate(task_outputs) for _ in words]
    bins_in: list[set[int]] = [set() for _ in range(n)]
    bins_out: list[set[int]] = [set() for _ in range(n)]
    for owners, values, edges, bins_of in (
        (owners_in, input_words, input_edges, bins_in),
        (owners_out, output_words, output_edges, bins_out),
    ):
        for k, b in zip(owners, bin_indices(values, edges, overflow=True).tolist(), strict=True):
            bins_of[k].add(b)
    by_len = {
        "instruction": picker.pick(lambda i: [int(inst_bins[i])]),
        "input": picker.pick(lambda i: bins_in[i]),
        "output": picker.pick(lambda i: bins_out[i]),
    }
    by_rouge = picker.pick(lambda i: [int(rouge_bins[i])])
    examples = {
        "verbs": {v: [_example(tasks[i]) for i in by_verb.get(v, [])] for v in sorted(top_verbs)},
        "pairs": {f"{v} {x}": [_example(tasks[i]) for i in by_pair.get((v, x), [])] for v, x in sorted(top_pairs)},
        "lengths": {
            kind: [[_example(tasks[i]) for i in by_len[kind].get(b, [])] for b in range(len(_length_edges(kind)) - 1)]
            for kind in LENGTH_BINS
        },
        "seed_rouge": [
            [_example(tasks[i], f"{seed_scores[i]:.3f} to: {nearest_seed(i)}") for i in by_rouge.get(b, [])]
            for b in range(ROUGE_BINS)
        ],
    }
    lap("samples")

    embeddings = None
    neighbour = [None] * n
    if opts.embeddings:
        from selfinstruct.views.embeddings import embedding_diversity

        embeddings = embedding_diversity(
            instructions, model=opts.embedding_model, limit=opts.embedding_limit, seed=opts.seed,
            progress=opts.progress, encoder=opts.encoder,
        )  # fmt: skip
        neighbour = embeddings.pop("per_instruction")
        lap("embeddings")

    scores = [quality.score_of(r) for r in judge_records]
    rows: dict[str, list[Any]] = {
        "id": [t.id for t in tasks],
        "instruction": instructions,
        "is_classification": [t.is_classification for t in tasks],
        "instances": [len(t.instances) for t in tasks],
        "round": rounds_of,
        "run_id": [t.meta.get("run_id") if isinstance(t.meta.get("run_id"), str) else None for t in tasks],
        "instruction_words": instruction_words,
        "mean_input_words": [sum(w) / len(w) if w else None for w in task_inputs],
        "mean_output_words": [sum(w) / len(w) if w else None for w in task_outputs],
        "empty_inputs": [len(t.instances) - len(w) for t, w in zip(tasks, task_inputs, strict=True)],
        "seed_rouge_l": [float(x) for x in seed_scores],
        "nearest_seed": [nearest_seed(i) for i in range(n)],
        "stored_max_similarity": [
            float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None for v in recorded
        ],
        "verb": [p[0] for p in pairs],
        "noun": [p[1] for p in pairs],
        "leading_word": leading_words,
        "judge_score": scores,
        "embedding_nn_distance": neighbour,
        **{f"signal_{name}": values for name, values in flags.items()},
    }

    target = runs[-1].get("target") if runs else (stored.get("config") or {}).get("num_instructions")
    report = {
        "schema": SCHEMA,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "pool": {
            "directory": str(pool.directory),
            "name": pool.directory.resolve().name,
            "tasks": n,
            "target": target if isinstance(target, int) else None,
            "model": stored.get("model") or (runs[-1].get("model") if runs else None),
            "seeds_path": str(seeds_path),
            "seeds": len(seeds),
            "rejected_logged": sum(rejects.by_reason.values()),
            "unused_logged": sum(rejects.unused.values()),
        },
        "warnings": warnings,
        "growth": growth,
        "diversity": diversity,
        "shape": shape,
        "quality": quality_section,
        "samples": samples,
        "examples": examples,
        "embeddings": embeddings,
        "comparison": None,
        "timings": timings,
    }
    _exact_counts(report, whole)
    if whole.sampled:
        labels = whole.labels  # for --against: the whole pool's labels
    return Measured(
        report, rows, tokens, Counter({_clip(k, 80): v for k, v in labels.items()}),
        whole.leading if whole.sampled else None,
    )  # fmt: skip


def _full_counts(values: Iterable[Any]) -> Counter[Any]:
    return Counter(v for v in values if v)


def build_reports(directories: Sequence[str | Path], options: ReportOptions | None = None) -> list[Measured]:
    """Measure one pool, or two for ``--against``. With two, each report's ``comparison`` holds what a
    side-by-side figure needs from the *other* pool's full counts (a word outside one pool's top 20 is
    still counted, and a word absent is absent), and distinct-n on a seeded random subsample of the larger
    pool the size of the smaller one (distinct-n falls as a pool grows, so unequal sizes do not compare)."""
    opts = options or ReportOptions()
    measured = [measure_pool(d, opts) for d in directories]
    if len(measured) != 2:
        return measured
    words = [m.leading if m.leading is not None else _full_counts(m.rows["leading_word"]) for m in measured]
    label_counts = [m.labels for m in measured]
    sizes = [len(m.rows["id"]) for m in measured]
    small = min(sizes)
    for k, m in enumerate(measured):
        other = measured[1 - k]
        shown_words = [x["word"] for x in m.report["diversity"]["leading_words"]["top"]]
        shown_words += [x["word"] for x in other.report["diversity"]["leading_words"]["top"]]
        shown_labels = [x["label"] for x in m.report["shape"]["labels"]["top"]]
        shown_labels += [x["label"] for x in other.report["shape"]["labels"]["top"]]
        if sizes[k] > small:
            picks = sorted(random.Random(opts.seed).sample(range(sizes[k]), small))
            ngrams = _ngrams([m.tokens[i] for i in picks])
        else:
            ngrams = m.report["diversity"]["distinct_ngrams"]
        # A sampled pool's rows are a uniform sample already: a subsample of them is one of the whole pool.
        whole = m.report["pool"]["tasks"]
        matched = {"sampled": sizes[k] > small or whole > sizes[k], "tasks": small, "of": whole, "ngrams": ngrams}
        m.report["comparison"] = {
            "leading_words": {w: words[k].get(w, 0) for w in dict.fromkeys(shown_words)},
            "labels": {lab: label_counts[k].get(lab, 0) for lab in dict.fromkeys(shown_labels)},
            "label_total": sum(label_counts[k].values()),
            "distinct_ngrams_matched": matched,
        }
    return measured


PARQUET_HINT = "writing Parquet needs pyarrow: pip install pyarrow (or pip install 'selfinstruct[export]')"


def write_parquet(measured: Measured, where: str | Path | Any) -> int:
    """Write the per-task measures as Parquet (one row per task) to a path or a binary file object;
    returns the row count."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(PARQUET_HINT) from None
    table = pa.table({name: pa.array(values) for name, values in measured.rows.items()})
    pq.write_table(table, where if hasattr(where, "write") else str(where))
    return table.num_rows
