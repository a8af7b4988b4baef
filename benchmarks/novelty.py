"""Benchmark of the exact ROUGE-L novelty index (selfinstruct.gates.novelty) against the rouge-score loop.

One run measures:

(a) the reference: rouge-score's ``_score_lcs`` per pre-tokenized pair, as the Self-Instruct code does, in
    pairs per second on random pairs of the corpus;
(b) sequential de-duplication of the whole corpus with the index (each instruction against every one
    kept before it, threshold 0.7, file order; ``NoveltyIndex.filter_batch``): seconds (median of 3 runs)
    and kept count; then a check against rouge-score itself on the first ``--check`` candidates: each
    candidate's decision (and, when rejected, its exact max score) against the kept prefix, which by
    induction proves the reference loop keeps the same set (checked in parallel processes);
(c) the throughput ratio: pairs the naive loop scores for the full de-dup (sum over candidates of the
    number kept before it) per second of index time, divided by the reference pairs per second;
(b2) the same de-dup with the generation loop's provenance settings (``report_floor=0.0``, ``top_k=5``: the
    exact top-5 and maximum of every candidate, as ``generate`` records them): seconds (median of 3), and
    the first ``--check`` candidates' top-5 (positions and floats) and maximum against rouge-score;
(d) per-query latency (median, p95) at index sizes 10K, 100K and 1M synthetic instructions (Zipfian
    vocabulary, 5-60 tokens) at the default floor and at floor 0.0 with top-5, plus build time with
    ``NoveltyIndex.extend`` (bulk) and, at 100K, with one ``add`` per instruction;
(e) peak resident memory (ru_maxrss) after the largest build.

    python benchmarks/novelty.py [--corpus ../shared/bench/instructions.jsonl] [--quick]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import rapidfuzz
from rouge_score import rouge_scorer

from selfinstruct.gates.novelty import NoveltyIndex, NoveltyResult

THRESHOLD = 0.7
DEFAULT_CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "bench" / "instructions.jsonl"

_SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
_TOKENIZE = _SCORER._tokenizer.tokenize


def load_corpus(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line)["instruction"] for line in f if line.strip()]


def reference_pairs_per_second(corpus: list[str], pairs: int, seed: int = 0) -> float:
    """rouge-score's loop on pre-tokenized random pairs of corpus instructions, as Self-Instruct runs it."""
    rng = random.Random(seed)
    tokens = [_TOKENIZE(text) for text in rng.sample(corpus, min(len(corpus), 4_000))]
    sample = [(rng.choice(tokens), rng.choice(tokens)) for _ in range(pairs)]
    start = time.perf_counter()
    for new, existing in sample:
        _ = rouge_scorer._score_lcs(new, existing).fmeasure
    return pairs / (time.perf_counter() - start)


def dedup(corpus: list[str], **options: float) -> tuple[float, list[NoveltyResult]]:
    index = NoveltyIndex(threshold=THRESHOLD, **options)  # type: ignore[arg-type]
    start = time.perf_counter()
    results = index.filter_batch(corpus)
    return time.perf_counter() - start, results


# The check runs in worker processes that inherit these (fork).
_CHECK_TOKENS: list[list[str]] = []
_CHECK_KEPT: list[int] = []


def _reference_top(i: int) -> tuple[int, float, list[tuple[float, int]]]:
    """rouge-score's max F of candidate i against the candidates kept before it, and its top 5 above 0.

    The top 5 holds (score, position in the kept sequence), score descending then position.
    """
    new = _CHECK_TOKENS[i]
    scored = []
    for position, j in enumerate(_CHECK_KEPT):
        if j >= i:
            break
        scored.append((rouge_scorer._score_lcs(new, _CHECK_TOKENS[j]).fmeasure, position))
    best = max((f for f, _ in scored), default=0.0)
    top = sorted([x for x in scored if x[0] > 0], key=lambda x: (-x[0], x[1]))[:5]
    return i, best, top


def check_against_reference(
    corpus: list[str], maxima: list[float], n: int, workers: int, tops: list[list[tuple[float, int]]] | None = None
) -> tuple[int, int]:
    """Mismatches on the first n candidates, and pairs scored.

    A mismatch: a different decision, or max score when rejected; with ``tops`` (the top 5 by score then
    position, found with ``report_floor=0.0``) also a different maximum or top 5.
    """
    global _CHECK_TOKENS, _CHECK_KEPT
    _CHECK_TOKENS = [_TOKENIZE(text) for text in corpus[:n]]
    _CHECK_KEPT = [i for i in range(n) if maxima[i] <= THRESHOLD]
    pairs = sum(sum(1 for j in _CHECK_KEPT if j < i) for i in range(n))
    order = sorted(range(n), key=lambda i: -i)  # longest scans first
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers) as pool:
        reference = {i: (best, top) for i, best, top in pool.imap_unordered(_reference_top, order, chunksize=8)}
    mismatches = 0
    for i in range(n):
        (ref, ref_top), ours = reference[i], maxima[i]
        wrong_decision = (ref > THRESHOLD) != (ours > THRESHOLD) or (ref > THRESHOLD and ref != ours)
        wrong_top = tops is not None and (ref != ours or ref_top != tops[i])
        mismatches += wrong_decision or wrong_top
    return mismatches, pairs


def synthetic_instructions(count: int, seed: int, vocab: int = 50_000, zipf_s: float = 1.1) -> list[str]:
    """Instructions of 5-60 tokens (log-normal, median 18) over a Zipfian vocabulary of pseudo-words."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = []
    for rank in range(vocab):
        word, x = "", rank
        while True:
            word += letters[x % 26]
            x //= 26
            if x == 0:
                break
        words.append(word + "e" * max(0, 3 - len(word)))
    cdf = np.cumsum(np.arange(1, vocab + 1, dtype=np.float64) ** -zipf_s)
    cdf /= cdf[-1]
    table = np.array(words, dtype=object)
    rng = np.random.default_rng(seed)
    out: list[str] = []
    while len(out) < count:  # in chunks, to keep the generator's own memory small
        chunk = min(50_000, count - len(out))
        lengths = np.clip(rng.lognormal(np.log(18), 0.5, chunk).astype(np.int64), 5, 60)
        draws = np.minimum(np.searchsorted(cdf, rng.random(int(lengths.sum()))), vocab - 1)
        position = 0
        for length in lengths.tolist():
            out.append(" ".join(table[draws[position : position + length]].tolist()).capitalize() + ".")
            position += length
    return out


def perturb(text: str, rng: random.Random) -> str:
    """A near-duplicate: one or two words dropped or swapped."""
    words = text.split()
    for _ in range(rng.randint(1, 2)):
        if len(words) > 3 and rng.random() < 0.5:
            words.pop(rng.randrange(len(words)))
        else:
            i = rng.randrange(len(words))
            j = rng.randrange(len(words))
            words[i], words[j] = words[j], words[i]
    return " ".join(words)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def current_rss_mib() -> float:
    """Resident memory now (Linux /proc; NaN elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="JSONL with an 'instruction' field")
    parser.add_argument("--quick", action="store_true", help="smaller samples, index sizes up to 100K")
    parser.add_argument("--check", type=int, default=None, help="candidates checked against rouge-score")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="for the check")
    args = parser.parse_args(argv)

    ref_pairs = 4_000 if args.quick else 20_000
    check_n = args.check if args.check is not None else (300 if args.quick else 1_000)
    sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    queries = 200

    print(
        f"python {platform.python_version()}, rapidfuzz {rapidfuzz.__version__}, numpy {np.__version__}, "
        f"{os.cpu_count()} CPUs, {platform.machine()}"
    )
    corpus = load_corpus(args.corpus)
    print(f"corpus: {args.corpus} ({len(corpus):,} instructions)")

    # (a) reference
    ref_rate = reference_pairs_per_second(corpus, ref_pairs)
    print(f"\n(a) rouge-score _score_lcs loop: {ref_rate:,.0f} pairs/s ({ref_pairs:,} random corpus pairs)")

    # (b) sequential de-dup
    times = []
    maxima: list[float] = []
    for _ in range(3):
        seconds, results = dedup(corpus)
        maxima = [r.max_score for r in results]
        times.append(seconds)
    dedup_s = statistics.median(times)
    kept_flags = [m <= THRESHOLD for m in maxima]
    kept = sum(kept_flags)
    naive_pairs = 0
    running = 0
    for flag in kept_flags:
        naive_pairs += running
        running += flag
    print(
        f"\n(b) sequential de-dup, {len(corpus):,} instructions, threshold {THRESHOLD}: "
        f"{dedup_s:.2f} s (median of {', '.join(f'{t:.2f}' for t in times)}), kept {kept:,}"
    )
    start = time.perf_counter()
    mismatches, check_pairs = check_against_reference(corpus, maxima, check_n, args.workers)
    print(
        f"    check vs rouge-score on the first {check_n:,} candidates ({check_pairs:,} pairs, "
        f"{time.perf_counter() - start:.0f} s): {mismatches} mismatches "
        f"({'kept set identical' if mismatches == 0 else 'DIFFERENT'})"
    )

    # (b2) with the loop's provenance settings: exact top-5 and maximum for every candidate
    prov_times = []
    prov: list[NoveltyResult] = []
    for _ in range(3):
        seconds, prov = dedup(corpus, report_floor=0.0, top_k=5)
        prov_times.append(seconds)
    prov_s = statistics.median(prov_times)
    same = [r.max_score for r in prov] == maxima or all(
        (a.max_score > THRESHOLD) == (b > THRESHOLD) for a, b in zip(prov, maxima, strict=True)
    )
    print(
        f"\n(b2) the same with report_floor=0.0, top_k=5 (exact provenance): {prov_s:.2f} s "
        f"(median of {', '.join(f'{t:.2f}' for t in prov_times)}), same decisions: {'yes' if same else 'NO'}"
    )
    # Positions in the kept sequence: a kept candidate's index position is its rank among those kept.
    tops = [[(m.score, m.index) for m in r.top] for r in prov]
    start = time.perf_counter()
    prov_mismatches, _ = check_against_reference(corpus, [r.max_score for r in prov], check_n, args.workers, tops)
    print(
        f"     top-5 and maximum vs rouge-score on the first {check_n:,} candidates "
        f"({time.perf_counter() - start:.0f} s): {prov_mismatches} mismatches"
    )
    mismatches += prov_mismatches + (not same)

    # (c) throughput
    naive_s = naive_pairs / ref_rate
    ratio = (naive_pairs / dedup_s) / ref_rate
    print(
        f"\n(c) naive loop pairs for the de-dup: {naive_pairs:,} (~{naive_s / 3600:.1f} h at the reference "
        f"rate); index: {naive_pairs / dedup_s:,.0f} pairs/s equivalent -> {ratio:,.0f}x the reference"
    )

    # (d) latency at growing synthetic index sizes, (e) memory
    print(f"\n(d) query latency, {queries} queries per size (75% fresh, 25% near-duplicates of indexed ones)")
    total = sizes[-1]
    start = time.perf_counter()
    synthetic = synthetic_instructions(total + queries, seed=1)
    print(f"    generated {total + queries:,} synthetic instructions in {time.perf_counter() - start:.1f} s")
    add_size = sizes[min(1, len(sizes) - 1)]
    start = time.perf_counter()
    one_by_one = NoveltyIndex(threshold=THRESHOLD)
    for text in synthetic[:add_size]:
        one_by_one.add(text)
    add_s = time.perf_counter() - start
    del one_by_one
    rss_before = current_rss_mib()
    rng = random.Random(2)
    fresh = synthetic[total:]
    index = NoveltyIndex(threshold=THRESHOLD)
    rows = []
    built = 0
    build_total = 0.0
    for size in sizes:
        start = time.perf_counter()
        index.extend(synthetic[built:size])
        build_total += time.perf_counter() - start
        built = size
        batch = [fresh[i] if i % 4 else perturb(synthetic[rng.randrange(size)], rng) for i in range(queries)]
        row: list[float] = [size, build_total]
        for floor, top_k in ((THRESHOLD, 10), (0.0, 5)):
            index.report_floor, index.top_k = floor, top_k  # the same index answers for any floor
            latencies = []
            rejected = 0
            for text in batch:
                start = time.perf_counter()
                result = index.query(text)
                latencies.append(time.perf_counter() - start)
                rejected += result.max_score > THRESHOLD
            row += [statistics.median(latencies), float(np.percentile(latencies, 95)), rejected]
        rows.append(row)
    print(f"    build with one add per instruction: {add_size:,} in {add_s:.1f} s")
    print(f"    {'':>12} {'':>13} {'floor 0.7 (default)':^30} {'floor 0.0, top-5 (generate)':^30}")
    print(
        f"    {'index size':>12} {'extend (cum.)':>13} {'median':>10} {'p95':>10} {'rejected':>9}"
        f" {'median':>10} {'p95':>10} {'rejected':>9}"
    )
    for size, build_s, med, p95, rejected, med0, p950, rejected0 in rows:
        print(
            f"    {size:>12,} {build_s:>11.1f} s {med * 1e3:>7.2f} ms {p95 * 1e3:>7.2f} ms {rejected:>9}"
            f" {med0 * 1e3:>7.2f} ms {p950 * 1e3:>7.2f} ms {rejected0:>9}"
        )
    peak = peak_rss_mib()
    rss_after = current_rss_mib()
    print(
        f"\n(e) peak RSS (ru_maxrss) after the {sizes[-1]:,} build: {peak:,.0f} MiB; current RSS "
        f"{rss_before:,.0f} MiB before the build (interpreter, rouge-score/nltk, texts) -> {rss_after:,.0f} MiB "
        f"after: the index itself ~{rss_after - rss_before:,.0f} MiB"
    )

    size, build_s, med, p95, _, med0, p950, _ = rows[-1]
    print("\nsummary")
    print(f"  reference rouge-score loop     {ref_rate:>12,.0f} pairs/s")
    print(f"  corpus de-dup ({len(corpus):,})      {dedup_s:>12.2f} s   (target <= 3 s)")
    print(f"  throughput ratio               {ratio:>12,.0f} x   (target >= 10,000 x)")
    print(f"  de-dup with exact top-5        {prov_s:>12.2f} s")
    print(f"  identical to rouge-score       {'yes' if mismatches == 0 else 'NO':>12}   ({check_n:,} candidates)")
    print(f"  query at {size:,}              {med * 1e3:>9.2f} ms median, {p95 * 1e3:.2f} ms p95 (target <= 5 ms)")
    print(f"  same, floor 0.0 and top-5      {med0 * 1e3:>9.2f} ms median, {p950 * 1e3:.2f} ms p95")
    print(f"  build {size:,} (extend)        {build_s:>9.1f} s   (one add each: {add_s:.1f} s for {add_size:,})")
    print(f"  peak RSS                       {peak:>9,.0f} MiB   (target <= 1024 MiB)")
    return 0 if mismatches == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
