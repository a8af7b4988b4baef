"""What ``selfinstruct report`` measures about a pool, as one JSON-ready dict (the HTML is drawn from it).

Four sections, after the analyses of the Self-Instruct paper and the questions a user asks before
fine-tuning on a pool:

* **growth**: pool size over time with the runs of the ledger, the acceptance rate over the rounds
  (accepted tasks over accepted plus rejected candidates of each round, from ``tasks.jsonl`` and
  ``rejected.jsonl``; per run from ``runs.jsonl`` when rejected candidates were not kept), rejections by
  reason, tokens and seconds per accepted task;
* **diversity**: ROUGE-L F of each machine instruction to its most similar *seed* instruction, exactly
  (:meth:`NoveltyIndex.nearest_all`; the stored ``max_similarity`` is against seeds *and* the pool at the
  time, a different number, shown beside it), the verb–noun structure (:mod:`selfinstruct.verbnoun`),
  leading words, distinct n-grams (distinct-n: distinct n-grams over all n-grams, on rouge tokens);
* **shape**: word counts of instructions, non-empty inputs and outputs (the paper's Figure 3), share of
  classification tasks and of tasks whose every input is empty, instances per task, the answers to the
  classification question and the label counts of classification tasks;
* **samples**: a seeded random sample, the tasks closest to a seed, the most common rejects per reason.

Optionally embedding diversity (:mod:`selfinstruct.embeddings`). Reads only: never takes the pool's lock,
never repairs a file (a torn last line is skipped with a warning, as ``status`` does). Nothing here prints.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from selfinstruct.errors import InputError, PoolError
from selfinstruct.novelty import NoveltyIndex, rouge_tokens_many
from selfinstruct.paths import default_seeds_path
from selfinstruct.pool import Pool
from selfinstruct.task import Task, load_seed_tasks
from selfinstruct.verbnoun import DEFAULT_SPACY_MODEL, verb_noun_pairs

SCHEMA = "selfinstruct-report/1"
ROUGE_BINS = 20  # histogram of ROUGE-L F over [0, 1], bins of 0.05 as in the paper's Figure 4
MAX_GROWTH_POINTS = 400  # pool size over time is thinned to this many points
MAX_ACCEPTANCE_POINTS = 120  # rounds are grouped into at most this many points
NGRAM_ORDERS = (1, 2, 3, 4)
# Word-count histograms: (bin width, upper edge); the last bin holds everything from the edge up.
LENGTH_BINS = {"instruction": (2, 60), "input": (5, 150), "output": (5, 150)}
TEXT_LIMIT = 600  # characters of a task's text kept in samples


@dataclass
class ReportOptions:
    """Everything ``selfinstruct report`` can be asked; the CLI fills one of these."""

    seeds: str | None = None  # seed file; None: the one the pool was grown from, else ours
    parser: str = "auto"  # verb-noun method: auto, spacy, heuristic
    spacy_model: str = DEFAULT_SPACY_MODEL
    embeddings: bool = False
    embedding_model: str | None = None
    embedding_limit: int = 10_000
    sample_size: int = 12
    closest: int = 10
    reject_examples: int = 3
    seed: int = 0
    workers: int = 1


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


def histogram(values: Sequence[float], edges: Sequence[float], *, overflow: bool = False) -> dict[str, Any]:
    """Counts of ``values`` per bin ``[edges[i], edges[i+1])``, the last bin closed. With ``overflow`` the
    last bin also takes every value above the last edge (it is then labelled "≥ edges[-2]")."""
    arr = np.asarray(values, dtype=np.float64)
    if overflow:
        arr = np.minimum(arr, edges[-1])
    counts, _ = np.histogram(arr, bins=np.asarray(edges, dtype=np.float64))
    return {"edges": [_round(e) for e in edges], "counts": counts.tolist(), "overflow": overflow}


def _length_histogram(values: Sequence[int], kind: str) -> dict[str, Any]:
    width, top = LENGTH_BINS[kind]
    edges = [*range(0, top + width, width), top + width]
    return histogram(values, edges, overflow=True)


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


def _runs_section(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rows = []
    total = Counter[str]()
    for run in runs:
        accepted, candidates = _int(run.get("accepted")), _int(run.get("candidates"))
        tokens = _int(run.get("prompt_tokens")) + _int(run.get("completion_tokens"))
        seconds = _number(run.get("seconds"))
        total.update(
            accepted=accepted,
            candidates=candidates,
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
                "pool_before": _int(run.get("pool_before")),
                "pool_after": _int(run.get("pool_after")),
                "accepted": accepted,
                "candidates": candidates,
                "acceptance_rate": _round(accepted / candidates) if candidates else 0.0,
                "seconds": _round(seconds, 1),
                "tokens": tokens,
                "tokens_per_accepted": _round(tokens / accepted, 1) if accepted else None,
                "seconds_per_accepted": _round(seconds / accepted, 3) if accepted else None,
            }
        )
    seconds_total = sum(_number(r.get("seconds")) for r in runs)
    accepted = total["accepted"]
    return {
        "runs": rows,
        "totals": {
            "runs": len(runs),
            "rounds": total["rounds"],
            "candidates": total["candidates"],
            "accepted": accepted,
            "acceptance_rate": _round(accepted / total["candidates"]) if total["candidates"] else 0.0,
            "prompt_tokens": total["prompt_tokens"],
            "completion_tokens": total["completion_tokens"],
            "seconds": _round(seconds_total, 1),
            "tokens_per_accepted": _round(total["tokens"] / accepted, 1) if accepted else None,
            "seconds_per_accepted": _round(seconds_total / accepted, 3) if accepted else None,
        },
    }


def _size_over_time(tasks: Sequence[Task]) -> list[list[float]]:
    times = sorted(t for t in (_parse_time(task.meta.get("created_at")) for task in tasks) if t is not None)
    if not times:
        return []
    n = len(times)
    if n <= MAX_GROWTH_POINTS:
        return [[t, i + 1] for i, t in enumerate(times)]
    picks = sorted({round(i * (n - 1) / (MAX_GROWTH_POINTS - 1)) for i in range(MAX_GROWTH_POINTS)})
    return [[times[i], i + 1] for i in picks]


def _acceptance_by_round(accepted: Counter[int], rejected: Counter[int]) -> list[dict[str, Any]]:
    rounds = sorted(set(accepted) | set(rejected))
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
                "acceptance_rate": _round(acc / (acc + rej)) if acc + rej else 0.0,
            }
        )
    return points


# --------------------------------------------------------------------------------------------- the report


@dataclass
class _Rejects:
    by_reason: Counter[str]
    by_round: Counter[int]
    texts: dict[str, Counter[str]]  # reason -> instruction key -> count
    example: dict[tuple[str, str], dict[str, Any]]  # (reason, key) -> the first record seen


def _read_rejects(records: Iterable[dict[str, Any]]) -> _Rejects:
    rejects = _Rejects(Counter(), Counter(), {}, {})
    for record in records:
        reason = record.get("reject_reason")
        reason = reason if isinstance(reason, str) and reason else "unknown"
        rejects.by_reason[reason] += 1
        round_number = record.get("round")
        if isinstance(round_number, int) and not isinstance(round_number, bool):
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
                example["keyword"] = record["keyword"]
            examples.append(example)
        out.append({"reason": reason, "count": count, "examples": examples})
    return out


def _task_sample(task: Task) -> dict[str, Any]:
    first = task.instances[0] if task.instances else None
    return {
        "id": task.id,
        "instruction": _clip(task.instruction),
        "is_classification": task.is_classification,
        "instances": len(task.instances),
        "input": _clip(first.input) if first else "",
        "output": _clip(first.output) if first else "",
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


def build_report(directory: str | Path, options: ReportOptions | None = None) -> dict[str, Any]:
    """Read the pool at ``directory`` and measure it (see the module docstring). Raises PoolError for a
    missing or damaged pool, InputError for a bad seed file, ConfigError for an unavailable optional part."""
    opts = options or ReportOptions()
    pool = Pool(directory)
    if not pool.directory.is_dir():
        raise PoolError(f"{pool.directory}: no such pool directory")
    if not pool.tasks_path.exists() and not pool.runs_path.exists():
        raise PoolError(f"{pool.directory}: not a pool (neither tasks.jsonl nor runs.jsonl is there)")
    tasks = pool.read_tasks()
    runs = pool.read_runs()
    stored = pool.read_config() or {}
    seeds_path, warnings = resolve_seeds(pool, opts.seeds)
    try:
        seeds = load_seed_tasks(seeds_path)
    except InputError as exc:
        raise InputError(exc.path, exc.line, f"{exc.problem} (the seed file the report compares with)") from None
    rejects = _read_rejects(pool.iter_rejected())
    warnings.extend(pool.warnings)

    instructions = [t.instruction for t in tasks]
    tokens = rouge_tokens_many(instructions)

    # -- growth
    growth = _runs_section(runs)
    accepted_by_round: Counter[int] = Counter(
        r for t in tasks if isinstance(r := t.meta.get("round"), int) and not isinstance(r, bool)
    )
    ledger_rejected: Counter[str] = Counter()
    for run in runs:
        counts = run.get("rejected")
        if isinstance(counts, dict):
            ledger_rejected.update({str(k): _int(v) for k, v in counts.items()})
    growth["size_over_time"] = _size_over_time(tasks)
    if rejects.by_round:
        growth["acceptance"] = {"by": "round", "points": _acceptance_by_round(accepted_by_round, rejects.by_round)}
    else:
        growth["acceptance"] = {
            "by": "run",
            "points": [
                {
                    "run_id": r["run_id"],
                    "accepted": r["accepted"],
                    "candidates": r["candidates"],
                    "acceptance_rate": r["acceptance_rate"],
                }
                for r in growth["runs"]
            ],
        }
    growth["rejections"] = {
        "ledger": dict(ledger_rejected.most_common()),
        "logged": dict(rejects.by_reason.most_common()),
    }

    # -- diversity
    index = NoveltyIndex([s.instruction for s in seeds], top_k=1, report_floor=0.0)
    seed_scores, seed_positions = index.nearest_all(instructions, tokens=tokens, workers=opts.workers)
    rouge_edges = [i / ROUGE_BINS for i in range(ROUGE_BINS + 1)]
    recorded = [t.meta.get("max_similarity") for t in tasks]
    stored_scores = [float(v) for v in recorded if isinstance(v, (int, float)) and not isinstance(v, bool)]
    verb_noun = verb_noun_pairs(instructions, method=opts.parser, model=opts.spacy_model)
    leading = Counter(w for w in map(_first_word, instructions) if w)
    diversity: dict[str, Any] = {
        "seed_rouge": {
            "seeds": len(seeds),
            "summary": summarize(seed_scores.tolist()),
            "histogram": histogram(seed_scores.tolist(), rouge_edges),
            "share_above_0_5": _round(float((seed_scores > 0.5).mean())) if len(tasks) else 0.0,
        },
        "stored_max_similarity": {
            "note": "ROUGE-L F against the seeds and the pool at generation time, as recorded in tasks.jsonl",
            "known": len(stored_scores),
            "summary": summarize(stored_scores),
            "histogram": histogram(stored_scores, rouge_edges),
        },
        "verb_noun": verb_noun.summary(),
        "leading_words": {
            "distinct": len(leading),
            "top": [{"word": w, "count": c} for w, c in leading.most_common(20)],
        },
        "distinct_ngrams": _ngrams(tokens),
    }

    # -- shape
    instruction_words = [len(t.instruction.split()) for t in tasks]
    input_words = [len(i.input.split()) for t in tasks for i in t.instances if i.input.strip()]
    output_words = [len(i.output.split()) for t in tasks for i in t.instances]
    classification = [t for t in tasks if t.is_classification]
    labels = Counter(i.output.strip() for t in classification for i in t.instances)
    label_total = sum(labels.values())
    per_task = Counter(len(t.instances) for t in tasks)
    n = len(tasks)
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

    # -- samples
    rng = random.Random(opts.seed)
    sample = sorted(rng.sample(range(n), min(opts.sample_size, n)))
    order: list[int] = np.argsort(-seed_scores, kind="stable")[: opts.closest].tolist()
    seed_texts = [s.instruction for s in seeds]
    samples = {
        "seed": opts.seed,
        "random": [_task_sample(tasks[i]) for i in sample],
        "closest_to_seed": [
            {
                "id": tasks[i].id,
                "instruction": _clip(tasks[i].instruction),
                "seed": _clip(seed_texts[seed_positions[i]]) if seed_positions[i] >= 0 else "",
                "score": _round(seed_scores[i]),
            }
            for i in map(int, order)
        ],
        "rejects": _reject_samples(rejects, opts.reject_examples),
    }

    embeddings = None
    if opts.embeddings:
        from selfinstruct.embeddings import embedding_diversity

        embeddings = embedding_diversity(
            instructions, model=opts.embedding_model, limit=opts.embedding_limit, seed=opts.seed
        )

    target = runs[-1].get("target") if runs else (stored.get("config") or {}).get("num_instructions")
    return {
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
        },
        "warnings": warnings,
        "growth": growth,
        "diversity": diversity,
        "shape": shape,
        "samples": samples,
        "embeddings": embeddings,
    }
