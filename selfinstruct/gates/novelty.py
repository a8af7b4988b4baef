"""Exact ROUGE-L novelty index: Self-Instruct's "keep if ROUGE-L F <= 0.7 against the whole pool" check.

Scope
-----
Self-Instruct keeps a generated instruction only if its ROUGE-L F-measure against every instruction
already in the pool is at most ``threshold`` (0.7); it is rejected when the maximum F is **greater** than
the threshold. The reference implementations score every (candidate, pool instruction) pair with
``rouge_score``, a pure-Python O(m·n) dynamic programme: a few thousand pairs per second. This module
gives the **same decisions and the same floats** (bit for bit) as

    rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False).score(target, prediction)["rougeL"].fmeasure

without scoring most pairs.

* :func:`rouge_tokens` is rouge-score's default tokenizer without stemming: ``text.lower()``, every run of
  characters outside ``[a-z0-9]`` is a separator, the tokens are the maximal ``[a-z0-9]+`` runs (so
  accented and non-Latin letters vanish: ``"café"`` → ``["caf"]``).
* :func:`rouge_l_f` computes the score in rouge-score's float order: ``p = lcs / len(prediction)``,
  ``r = lcs / len(target)``, ``f = 2 * p * r / (p + r)`` (0.0 when ``p + r == 0``; 0 when either token
  list is empty, where rouge-score returns the int 0, equal to 0.0). The LCS length comes from
  rapidfuzz's bit-parallel kernel over token ids mapped to one code point each.
* Orientation: pairs are scored as Self-Instruct does (``_score_lcs(new_tokens, existing_tokens)``):
  **target = the candidate, prediction = the existing instruction**. The F-measure is exactly symmetric
  in floating point (``(2*p)*r`` and ``(2*r)*p`` round the same exact product, ``p + r`` commutes), so the
  other orientation gives the identical float; the tests check both.

How the index avoids scoring every pair
---------------------------------------
``F = 2·LCS/(m+n)`` for token counts ``m`` (candidate) and ``n`` (existing), and ``LCS`` is at most the
multiset overlap of the two token lists. So ``F > floor`` needs ``n`` within a length window and an
overlap of more than ``floor·(m+n)/2`` tokens. The index keeps one posting list per (token, occurrence
number) key; a list that grows long is split into one list per instruction length class (token counts
growing by a factor 1.5). By pigeonhole, an instruction sharing ``need`` tokens with the candidate holds
at least one of *any* ``m - need + 1`` of the candidate's keys, so a query reads the short lists whole and,
per length class in the window, only as many of the split lists as pigeonhole requires for that class
(the shortest ones, plus a few more to tighten the bound). It bounds each hit's overlap by the lists it
appears in plus the lists not read, and verifies the survivors with the exact LCS and the exact
rouge-score float. All bounds use ``floor - 1e-9`` and round towards keeping, so an instruction whose
true F (the float rouge-score computes) exceeds the floor is never pruned.

The survivors are verified **best-first**: in order of their bound ``2·min(overlap, m, n)/(m+n)``, in
chunks that grow fourfold, and a query stops once ``top_k`` verified scores above the floor beat every
remaining bound (candidates whose bound ties the k-th best score are still verified, so ties keep their
insertion order). The accept/reject decision alone (:meth:`NoveltyIndex.is_novel`) stops at the first
verified score above the threshold. When the floor is below the threshold (exact provenance for every
task, as ``generate`` records it), a cheap *probe* first reads the query's rarest posting lists, verifies
the few instructions holding most of them and, when ``top_k`` of them score above the floor, takes the
k-th best of those exact scores as the floor of the real search: the true k-th best is at least that high,
so the answer is unchanged while far fewer lists are read and pairs verified.

:meth:`NoveltyIndex.extend` (also used by the constructor) builds the same index as one :meth:`add` per
instruction, with array operations for token ids, posting keys and lists.

What a query returns
--------------------
A query has a *report floor* (``NoveltyIndex(report_floor=...)``, default: the threshold, which is what
keeps the speed targets; it must be ``<= threshold``):

* ``max_score`` is the **exact** maximum F over the index whenever that maximum exceeds ``report_floor``
  (in particular whenever it exceeds the threshold, so the accept/reject decision is always exact). When
  the true maximum is ``<= report_floor``, ``max_score`` is the largest exact score among the
  instructions the query happened to verify (0.0 when none): a lower bound of the true maximum, itself
  ``<= report_floor``. With ``report_floor=0.0`` the maximum is always exact (every instruction sharing a
  token is verified; the others score 0.0), at a higher query cost.
* ``top`` is exact: the ``top_k`` instructions with the highest F **among those with F > report_floor**
  (all of which are verified), score descending, ties by insertion order. It is empty when nothing in
  the index scores above the floor (with the default floor: whenever the candidate is novel).

The index holds per instruction a reference to its text, one compact code-point string of its token ids,
its token count and length class (numpy), and one 4-byte posting entry per token (``array('i')``): no
per-instruction Python lists of tokens.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import cast

import numpy as np
from rapidfuzz.distance import LCSseq
from rapidfuzz.process import cdist

__all__ = [
    "DEFAULT_THRESHOLD",
    "Match",
    "NoveltyIndex",
    "NoveltyResult",
    "rouge_l_f",
    "rouge_tokens",
    "rouge_tokens_many",
]

DEFAULT_THRESHOLD = 0.7
DEFAULT_TOP_K = 10

# Pruning bounds are computed against ``floor - _EPS``: a pair is dropped only if even the exact rational
# 2·LCS/(m+n), let alone its float (within a few ulps of it), cannot exceed the floor.
_EPS = 1e-9

# rouge-score: lowercase, replace [^a-z0-9]+ by a space, split on whitespace, keep ^[a-z0-9]+$ tokens;
# the tokens that survive are exactly the maximal [a-z0-9]+ runs of the lowercased text.
_TOKEN_RE = re.compile(r"[a-z0-9]+")

# Token ids become code points, so an instruction is a short str that rapidfuzz compares natively. Ids
# skip the surrogate block; the last code point is a sentinel for ids beyond the code-point space.
_SURROGATE_START = 0xD800
_SURROGATE_SIZE = 0x800
_SENTINEL = chr(0x10FFFF)
_CODE_CAPACITY = 0x10FFFF - _SURROGATE_SIZE  # token ids 0 .. _CODE_CAPACITY-1 get their own code point

# Posting key = token id << _KEY_SHIFT | occurrence number (0 for a token's first occurrence in the
# instruction, 1 for its second, ...): keys per occurrence make the multiset overlap a set overlap.
_KEY_SHIFT = 32
# Instruction length classes (for split posting lists) grow by this factor.
_CLASS_RATIO = 1.5


def _class_starts() -> list[int]:
    """First token count of each instruction length class: 0, 1, 2, 3, 4, 6, 9, 13, 19, ... (ratio 1.5)."""
    starts = [0, 1]
    while starts[-1] < 2**31:
        starts.append(max(starts[-1] + 1, int(starts[-1] * _CLASS_RATIO)))
    return starts


_CLASS_STARTS = _class_starts()
if len(_CLASS_STARTS) > 256:  # pragma: no cover - classes are stored as uint8
    raise AssertionError("too many length classes")

# A query reads, per length class, the lists pigeonhole requires, then further lists (shortest first)
# while their total length stays within _EXTRA_READ times what the required ones held: more lists read
# means a tighter overlap bound and fewer pairs to verify.
_EXTRA_READ = 2.0
# A posting list is split by length class once it holds this many positions.
_SPLIT_AT = 2048
# From this many pairs to verify on, one rapidfuzz cdist call beats a Python loop.
_CDIST_MIN = 24
# Hits are counted with np.bincount when they are at least 1/_BINCOUNT_RATIO of the index size, by sorting
# otherwise.
_BINCOUNT_RATIO = 5
# Best-first verification: the first chunk of candidates (highest bounds) and its growth factor.
_FIRST_CHUNK = 16
_CHUNK_GROWTH = 4
# The probe for a high first cutoff: run when the query's posting lists hold this many positions; read
# its rarest lists up to max(_PROBE_BUDGET, index size / 64) positions; verify _PROBE_VERIFY·k of them.
_PROBE_FROM = 4096
_PROBE_BUDGET = 512
_PROBE_VERIFY = 4
# Bulk building (NoveltyIndex.extend): instructions per chunk of array operations, and the fewest for which
# arrays beat one add per instruction.
_BULK_CHUNK = 65536
_BULK_MIN = 64


def rouge_tokens(text: str) -> list[str]:
    """rouge-score's default tokenization (no stemming) of ``text``."""
    return _TOKEN_RE.findall(text.lower())


_TOKEN_OR_SEPARATOR_RE = re.compile(r"[a-z0-9]+|\x00")


def rouge_tokens_many(texts: Sequence[str]) -> list[list[str]]:
    """``[rouge_tokens(t) for t in texts]``, faster for many texts: one regex scan over all of them."""
    if not texts:
        return []
    joined = "\x00".join(texts)
    if joined.count("\x00") != len(texts) - 1:  # a text holds NUL itself
        return [rouge_tokens(t) for t in texts]
    flat = _TOKEN_OR_SEPARATOR_RE.findall(joined.lower())
    bounds = [-1, *(i for i, token in enumerate(flat) if token == "\x00"), len(flat)]
    return [flat[a + 1 : b] for a, b in itertools.pairwise(bounds)]


def _fmeasure(lcs: int, target_len: int, prediction_len: int) -> float:
    """rouge-score's ``_score_lcs`` F-measure for an LCS length, in rouge-score's float order."""
    if target_len == 0 or prediction_len == 0:
        return 0.0
    precision = lcs / prediction_len
    recall = lcs / target_len
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


def _code(token_id: int) -> str:
    """The code point standing for ``token_id`` (valid for ids below ``_CODE_CAPACITY``)."""
    return chr(token_id if token_id < _SURROGATE_START else token_id + _SURROGATE_SIZE)


def _decode(char: str) -> int:
    """Inverse of :func:`_code`."""
    point = ord(char)
    return point if point < _SURROGATE_START else point - _SURROGATE_SIZE


def _lcs_tokens(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists."""
    if not a or not b:
        return 0
    ids: dict[str, int] = {}
    for token in a:
        ids.setdefault(token, len(ids))
    if len(ids) >= _CODE_CAPACITY:  # pragma: no cover - over a million distinct tokens
        return int(LCSseq.similarity(a, b))
    # Tokens of b that a lacks match nothing: they all share the sentinel, which a never contains.
    code_a = "".join([_code(ids[t]) for t in a])
    code_b = "".join([_code(ids[t]) if t in ids else _SENTINEL for t in b])
    return int(LCSseq.similarity(code_a, code_b))


def lcs_fmeasure(target: Sequence[str], prediction: Sequence[str]) -> float:
    """ROUGE-L F-measure of two token lists (see :func:`rouge_tokens`), as :func:`rouge_l_f` of their texts."""
    return _fmeasure(_lcs_tokens(target, prediction), len(target), len(prediction))


def rouge_l_f(candidate: str, existing: str) -> float:
    """ROUGE-L F-measure of ``candidate`` (target) against ``existing`` (prediction), as rouge-score.

    The same float as ``RougeScorer(["rougeL"]).score(candidate, existing)["rougeL"].fmeasure`` and, the
    F-measure being symmetric, as ``.score(existing, candidate)``.
    """
    target = rouge_tokens(candidate)
    prediction = rouge_tokens(existing)
    return _fmeasure(_lcs_tokens(target, prediction), len(target), len(prediction))


def _length_class(n: int) -> int:
    return bisect.bisect_right(_CLASS_STARTS, n) - 1


def _need(g: float, m: int, n: int) -> int:
    """Fewest shared tokens for 2·L/(m+n) > g (rounded down with a margin: never above the truth)."""
    if g <= 0:
        return 1
    return max(1, math.floor(g * (m + n) / 2.0 - _EPS) + 1)


@dataclass(frozen=True)
class Match:
    """An indexed instruction, its ROUGE-L F against the query and its insertion position (0-based)."""

    instruction: str
    score: float
    index: int


@dataclass(frozen=True)
class NoveltyResult:
    """One query's answer (the module docstring defines both fields exactly).

    ``max_score`` is exact whenever it exceeds the index's ``report_floor`` (hence whenever it exceeds the
    threshold); ``top`` is the exact top-k, score descending then insertion order, among the
    instructions scoring above ``report_floor``.
    """

    max_score: float
    top: list[Match]


class NoveltyIndex:
    """A growing pool of instructions answering "max ROUGE-L F of this candidate against the pool".

    Scores are ``rouge_l_f(candidate, existing)``, bit-identical to rouge-score. ``threshold``: a
    candidate is novel when its max F is ``<= threshold`` (Self-Instruct: 0.7). ``top_k``: how many most
    similar instructions a query reports. ``report_floor`` (default: the threshold; ``<= threshold``):
    queries find every instruction scoring above it, exactly (see the module docstring).
    """

    # Token ids from here on share the sentinel code point and get exact per-pair verification
    # (a class attribute so that tests can exercise the fallback with a small vocabulary).
    _code_capacity: int = _CODE_CAPACITY

    def __init__(
        self,
        instructions: Iterable[str] = (),
        *,
        top_k: int = DEFAULT_TOP_K,
        threshold: float = DEFAULT_THRESHOLD,
        report_floor: float | None = None,
    ) -> None:
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {top_k}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        floor = threshold if report_floor is None else report_floor
        if not 0.0 <= floor <= threshold:
            raise ValueError(f"report_floor must be in [0, threshold={threshold}], got {floor}")
        self.top_k = top_k
        self.threshold = threshold
        self.report_floor = floor
        self._vocab: dict[str, int] = {}
        self._chars: list[str] = []  # token id -> its code point (the sentinel beyond capacity)
        # Posting key -> positions, ascending: one list while short, then a dict of one list per class.
        self._postings: dict[int, array[int] | dict[int, array[int]]] = {}
        self._texts: list[str] = []
        self._codes: list[str] = []  # position -> token ids as code points
        self._lengths = np.zeros(1024, dtype=np.int32)  # position -> token count
        self._classes = np.zeros(1024, dtype=np.uint8)  # position -> length class
        self._class_sizes = [0] * len(_CLASS_STARTS)
        self._max_length = 0
        self._overflow: dict[int, list[int]] = {}  # position -> token ids, when its code has sentinels
        self.extend(instructions)

    def __len__(self) -> int:
        return len(self._texts)

    # ----------------------------------------------------------------------------------------- building

    def _token_id(self, token: str) -> int:
        token_id = self._vocab.get(token)
        if token_id is None:
            token_id = self._vocab[token] = len(self._vocab)
            self._chars.append(_code(token_id) if token_id < self._code_capacity else _SENTINEL)
        return token_id

    @staticmethod
    def _keys(ids: list[int]) -> list[int]:
        """Posting keys of token ids: one per (token, occurrence number), in no particular order."""
        if len(set(ids)) == len(ids):
            return [i << _KEY_SHIFT for i in ids]
        keys = []
        previous = -1
        occurrence = 0
        for token_id in sorted(ids):
            if token_id == previous:
                occurrence += 1
            else:
                previous = token_id
                occurrence = 0
            keys.append((token_id << _KEY_SHIFT) | occurrence)
        return keys

    def add(self, instruction: str) -> None:
        """Append ``instruction`` to the index (no novelty check: see :meth:`filter_batch`)."""
        self._add(instruction, rouge_tokens(instruction))

    def _add(self, instruction: str, tokens: list[str]) -> None:
        found = list(map(self._vocab.get, tokens))
        ids = [self._token_id(t) for t in tokens] if None in found else cast("list[int]", found)
        position = len(self._texts)
        n = len(ids)
        length_class = _length_class(n)
        # Lengths first: splitting a list that grows long reads the classes of its positions.
        if position == len(self._lengths):
            self._lengths = np.concatenate([self._lengths, np.zeros_like(self._lengths)])
            self._classes = np.concatenate([self._classes, np.zeros_like(self._classes)])
        self._lengths[position] = n
        self._classes[position] = length_class
        if n:
            postings = self._postings
            for key in self._keys(ids):
                entry = postings.get(key)
                if entry is None:
                    postings[key] = array("i", (position,))
                elif isinstance(entry, array):
                    entry.append(position)
                    if len(entry) >= _SPLIT_AT:
                        self._split_list(key, entry)
                else:
                    posting = entry.get(length_class)
                    if posting is None:
                        entry[length_class] = array("i", (position,))
                    else:
                        posting.append(position)
        chars = self._chars
        code = "".join([chars[i] for i in ids])
        if _SENTINEL in code:
            self._overflow[position] = ids
        self._class_sizes[length_class] += 1
        self._max_length = max(self._max_length, n)
        self._texts.append(instruction)
        self._codes.append(code)

    def extend(self, instructions: Iterable[str]) -> None:
        """Append many instructions (no novelty check): the same index as :meth:`add` for each, built faster.

        Tokenizing stays per instruction; token ids, posting keys and posting lists are built with array
        operations over chunks of ``_BULK_CHUNK`` instructions.
        """
        chunk: list[str] = []
        for text in instructions:
            chunk.append(text)
            if len(chunk) == _BULK_CHUNK:
                self._extend(chunk)
                chunk = []
        self._extend(chunk)

    def _extend(self, texts: list[str]) -> None:
        if len(texts) < _BULK_MIN:
            for text in texts:
                self._add(text, rouge_tokens(text))
            return
        vocab = self._vocab
        known = len(vocab)
        setdefault = vocab.setdefault
        findall = _TOKEN_RE.findall
        token_lists = [findall(text.lower()) for text in texts]
        lengths = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(texts))
        total = int(lengths.sum())
        # setdefault's default is evaluated first: a new token gets the next id.
        ids = np.fromiter(
            (setdefault(t, len(vocab)) for tokens in token_lists for t in tokens), dtype=np.int64, count=total
        )
        del token_lists
        capacity = self._code_capacity
        self._chars.extend(_code(i) if i < capacity else _SENTINEL for i in range(known, len(vocab)))
        base = len(self._texts)
        size = base + len(texts)
        while size > len(self._lengths):
            self._lengths = np.concatenate([self._lengths, np.zeros_like(self._lengths)])
            self._classes = np.concatenate([self._classes, np.zeros_like(self._classes)])
        classes = np.searchsorted(_CLASS_STARTS, lengths, side="right") - 1
        self._lengths[base:size] = lengths
        self._classes[base:size] = classes
        for length_class, count in enumerate(np.bincount(classes).tolist()):
            self._class_sizes[length_class] += count
        self._max_length = max(self._max_length, int(lengths.max()))

        # Codes: every id as its code point, decoded in one go, then cut per instruction.
        points = np.where(ids < _SURROGATE_START, ids, ids + _SURROGATE_SIZE)
        points[ids >= capacity] = ord(_SENTINEL)
        text = points.astype("<u4").tobytes().decode("utf-32-le")
        ends = np.cumsum(lengths).tolist()
        starts = [0, *ends[:-1]]
        self._codes.extend([text[a:b] for a, b in zip(starts, ends, strict=True)])
        positions = np.repeat(np.arange(base, size, dtype=np.int64), lengths)
        if len(vocab) > capacity:
            for position in np.unique(positions[ids >= capacity]).tolist():
                a, b = starts[position - base], ends[position - base]
                self._overflow[position] = ids[a:b].tolist()
        self._texts.extend(texts)
        if not total:
            return

        # Posting keys: (token id, occurrence number within its instruction), as _keys computes them.
        order = np.lexsort((ids, positions))  # by position, then id
        ids, positions = ids[order], positions[order]
        run_start = np.ones(total, dtype=bool)
        run_start[1:] = (ids[1:] != ids[:-1]) | (positions[1:] != positions[:-1])
        index = np.arange(total)
        first = np.maximum.accumulate(np.where(run_start, index, 0))
        keys = (ids << _KEY_SHIFT) | (index - first)
        order = np.argsort(keys, kind="stable")  # positions stay ascending within a key
        keys, positions = keys[order], positions[order].astype(np.intc)
        bounds = np.flatnonzero(keys[1:] != keys[:-1]) + 1
        group_starts = [0, *bounds.tolist()]
        group_ends = [*bounds.tolist(), total]
        raw = positions.tobytes()
        item = positions.itemsize
        postings = self._postings
        for key, a, b in zip(keys[group_starts].tolist(), group_starts, group_ends, strict=True):
            entry = postings.get(key)
            if entry is None:
                postings[key] = entry = array("i")
            if isinstance(entry, array):
                entry.frombytes(raw[a * item : b * item])
                if len(entry) >= _SPLIT_AT:
                    self._split_list(key, entry)
            else:
                group = positions[a:b]
                group_classes = self._classes[group]
                for length_class in np.unique(group_classes).tolist():
                    posting = entry.get(length_class)
                    if posting is None:
                        entry[length_class] = posting = array("i")
                    posting.frombytes(group[group_classes == length_class].tobytes())

    def _split_list(self, key: int, posting: array[int]) -> None:
        """Replace the long posting list of ``key`` by one list per length class."""
        positions = np.frombuffer(posting, dtype=np.intc)
        classes = self._classes[positions]
        self._postings[key] = {c: array("i", positions[classes == c].tobytes()) for c in np.unique(classes).tolist()}

    def _truncate(self, size: int) -> None:
        """Drop every instruction at position >= ``size`` (rolls back a non-adding batch)."""
        for position in range(len(self._texts) - 1, size - 1, -1):
            ids = self._overflow.pop(position, None) or [_decode(c) for c in self._codes[position]]
            length_class = _length_class(len(ids))
            self._class_sizes[length_class] -= 1
            for key in self._keys(ids) if ids else ():
                entry = self._postings[key]
                if isinstance(entry, array):
                    entry.pop()
                    if not entry:
                        del self._postings[key]
                else:
                    posting = entry[length_class]
                    posting.pop()
                    if not posting:
                        del entry[length_class]
        del self._texts[size:]
        del self._codes[size:]
        self._lengths[size:] = 0
        self._classes[size:] = 0
        self._max_length = int(self._lengths[:size].max()) if size else 0

    # ---------------------------------------------------------------------------------------- searching

    def _search(
        self, tokens: list[str], floor: float, k: int, stop_above: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Positions and exact scores of verified instructions, found best-first.

        With ``stop_above=None`` the result holds the exact top ``k`` (score descending, then position)
        among the instructions scoring above ``floor``, and so the exact maximum whenever it exceeds
        ``floor``; it may hold other verified instructions too. With ``stop_above`` set, it holds an
        instruction scoring above ``stop_above`` whenever one exists (``floor`` should then be
        ``stop_above``): the search stops at the first one it verifies.
        """
        empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64))
        m = len(tokens)
        if m == 0 or not self._texts:
            return empty
        known = [i for i in map(self._vocab.get, tokens) if i is not None]
        if not known:
            return empty
        found = list(map(self._postings.get, self._keys(known)))
        cutoff = floor
        # Below the threshold a full top k is common and worth a probe; above it, most queries have none.
        if stop_above is None and k and floor < self.threshold:
            probed = self._probe(known, m, found, floor, k)
            if probed is not None:
                cutoff = probed
        cand, n, upper = self._candidates(m, found, cutoff)
        if len(cand) == 0:
            return empty
        return self._best_first(known, m, cand, n, upper, floor, cutoff, k, stop_above)

    def _probe(
        self, known: list[int], m: int, found: list[array[int] | dict[int, array[int]] | None], floor: float, k: int
    ) -> float | None:
        """An exact score that the query's k-th best neighbour reaches, from a cheap look at its rarest keys.

        Reads the query's shortest posting lists (a small budget of positions), verifies the few
        instructions holding the most of them, and returns the k-th best exact score found when ``k`` of
        them score above ``floor`` (``None`` otherwise, or when the query's lists are short anyway). The
        true k-th best is at least that score, so a search at that floor still finds the whole top k,
        and it reads and verifies far less than one at ``floor``.
        """
        sizes = [0 if e is None else len(e) if isinstance(e, array) else sum(map(len, e.values())) for e in found]
        if sum(sizes) < _PROBE_FROM:
            return None
        # Split lists contribute only the length classes around the query's: similar lengths score higher.
        near = range(max(0, _length_class(m) - 1), _length_class(m) + 2)
        parts: list[list[array[int]]] = []
        for entry in found:
            if entry is None:
                continue
            if isinstance(entry, array):
                parts.append([entry])
            else:
                parts.append([p for c in near if (p := entry.get(c)) is not None])
        parts.sort(key=lambda lists: sum(map(len, lists)))
        budget = max(_PROBE_BUDGET, len(self._texts) >> 6)
        chunks: list[bytes] = []
        for lists in parts:
            size = sum(map(len, lists))
            if size > budget and chunks:
                break
            budget -= size
            chunks.extend([p.tobytes() for p in lists])
        if not chunks:
            return None
        cand, counts = np.unique(np.frombuffer(b"".join(chunks), dtype=np.intc), return_counts=True)
        take = _PROBE_VERIFY * k
        if len(cand) > take:
            # Most shared rare keys per token of the pair: a guess at the best neighbours, not a bound.
            part = np.argpartition(-counts / (m + self._lengths[cand]), take - 1)[:take]
            cand = cand[part]
        scores = self._scores(known, m, cand.astype(np.int64), self._lengths[cand])
        above = scores[scores > floor]
        if len(above) < k:
            return None
        return float(np.partition(above, len(above) - k)[len(above) - k])

    def _candidates(
        self, m: int, found: list[array[int] | dict[int, array[int]] | None], floor: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions, token counts and overlap bounds of a superset of the instructions scoring above ``floor``.

        ``found`` holds the posting entries of the query's keys (``None`` for keys no instruction holds).
        Every instruction whose F against the query exceeds ``floor`` is in the result, with an upper
        bound of its LCS with the query (at most ``min(m, n)``); the result may hold others.
        """
        empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        g = floor - _EPS
        # F > floor needs L > g·(m+n)/2 with L <= min(m, n): n_lo <= n <= n_hi.
        if g > 0:
            n_lo = max(1, math.floor(g * m / (2.0 - g) - _EPS) + 1)
            n_hi = min(self._max_length, math.floor(m * (2.0 - g) / g + _EPS))
        else:
            n_lo, n_hi = 1, self._max_length
        if n_hi < n_lo:
            return empty
        # Short lists are read whole; long ones are split by length class and read class by class.
        lists: list[array[int]] = [entry for entry in found if isinstance(entry, array)]
        split_keys: list[dict[int, array[int]]] = [entry for entry in found if isinstance(entry, dict)]
        # Keys no instruction holds (and tokens no instruction holds) are empty lists, "read" for free.
        covered = m - len(split_keys)
        class_sizes = self._class_sizes
        unread = np.zeros(len(_CLASS_STARTS), dtype=np.int64)
        min_count = m
        for length_class in range(_length_class(n_lo), _length_class(n_hi) + 1):
            if not class_sizes[length_class]:
                continue
            need = _need(g, m, max(_CLASS_STARTS[length_class], n_lo))
            if need > m:
                break
            in_class = [by_class.get(length_class) for by_class in split_keys]
            present = sorted([p for p in in_class if p is not None], key=len)
            # Of any m - need + 1 of our keys, an instruction of this class sharing `need` holds one;
            # keys read whole or absent from this class come first (shortest).
            read = max(0, m - need + 1 - covered - (len(in_class) - len(present)))
            required = read
            budget = _EXTRA_READ * sum(map(len, present[:required]))
            while read < len(present) and len(present[read]) <= budget:
                budget -= len(present[read])
                read += 1
            lists.extend(present[:read])
            unread[length_class] = len(present) - read
            min_count = min(min_count, need - (len(present) - read))
        if not lists:
            return empty
        hits = np.frombuffer(b"".join(lists), dtype=np.intc)  # array("i") holds C ints
        min_count = max(1, min_count)
        size = len(self._texts)
        if len(hits) * _BINCOUNT_RATIO >= size:
            counts_all = np.bincount(hits, minlength=size)
            cand: np.ndarray = np.flatnonzero(counts_all >= min_count)
            counts = counts_all[cand]
        else:
            hits = np.sort(hits)
            starts = np.flatnonzero(np.concatenate(([True], hits[1:] != hits[:-1])))
            counts = np.diff(np.append(starts, len(hits)))
            cand = hits[starts]
            if min_count > 1:
                keep = counts >= min_count
                cand, counts = cand[keep], counts[keep]
        if len(cand) == 0:
            return empty
        n = self._lengths[cand].astype(np.int64)
        # Shared tokens <= lists it appears in + lists not read (in its class); and <= min(m, n).
        upper = np.minimum(np.minimum(counts + unread[self._classes[cand]], n), m)
        keep = 2 * upper > g * (m + n)
        return cand[keep].astype(np.int64), n[keep], upper[keep]

    def _best_first(
        self,
        known: list[int],
        m: int,
        cand: np.ndarray,
        n: np.ndarray,
        upper: np.ndarray,
        floor: float,
        cutoff: float,
        k: int,
        stop_above: float | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Verify candidates in order of their bound ``2·upper/(m+n)``; stop when no bound can change the answer.

        Every candidate whose bound reaches ``cutoff`` is verified unless ``k`` verified scores above
        ``floor`` already beat its bound (the top k is then settled: ties keep being verified, so the
        insertion order among equal scores is exact) or, with ``stop_above``, a verified score exceeds it.
        """
        mn = m + n
        bound = upper / mn  # for the order only; the stopping test below is exact, with a margin
        cut = cutoff - _EPS
        positions: list[np.ndarray] = []
        scores: list[np.ndarray] = []
        best = np.zeros(0, dtype=np.float64)  # the k best verified scores above floor
        remaining = np.arange(len(cand))
        # At the threshold few candidates survive the bounds and a top k above it is rare: one chunk.
        chunk = _FIRST_CHUNK if cutoff < self.threshold or stop_above is not None else len(cand)
        while len(remaining):
            if len(remaining) > chunk:
                part = np.argpartition(-bound[remaining], chunk - 1)
                pick, remaining = remaining[part[:chunk]], remaining[part[chunk:]]
            else:
                pick, remaining = remaining, remaining[:0]
            found = self._scores(known, m, cand[pick], n[pick])
            positions.append(cand[pick])
            scores.append(found)
            chunk *= _CHUNK_GROWTH
            if stop_above is not None:
                if bool((found > stop_above).any()):
                    break
                continue
            if not k:
                continue
            best = np.concatenate([best, found[found > floor]])
            if len(best) > k:
                best = np.partition(best, len(best) - k)[len(best) - k :]
            if len(best) == k and float(best.min()) - _EPS > cut:
                cut = float(best.min()) - _EPS
                # A float F equal to the k-th best has 2·LCS/(m+n) within ulps of it: kept by the margin.
                remaining = remaining[2 * upper[remaining] > cut * mn[remaining]]
        if len(positions) == 1:
            return positions[0], scores[0]
        return np.concatenate(positions), np.concatenate(scores)

    def _scores(self, known: list[int], m: int, cand: np.ndarray, n: np.ndarray) -> np.ndarray:
        """Exact rouge-score F of the query (``m`` tokens, ``known`` ids) against the instructions at ``cand``."""
        lcs = self._verify(known, cand)
        # rouge-score's float order, vectorised: the same IEEE double operations as the scalar formula.
        lcs_f = lcs.astype(np.float64)
        precision = lcs_f / n
        recall = lcs_f / m
        denom = precision + recall
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, 2 * precision * recall / denom, 0.0)

    def _verify(self, known: list[int], cand: np.ndarray) -> np.ndarray:
        """Exact LCS lengths between the query's known token ids and the instructions at ``cand``."""
        codes = self._codes
        positions: list[int] = cand.tolist()
        overflow = self._overflow
        capacity = self._code_capacity
        if (overflow and any(p in overflow for p in positions)) or (
            len(self._vocab) > capacity and any(i >= capacity for i in known)
        ):
            # Some ids share the sentinel code point: compare exact id sequences instead.
            out = []
            for p in positions:
                seq = overflow.get(p) or [_decode(c) for c in codes[p]]
                out.append(LCSseq.similarity(known, seq))
            return np.asarray(out, dtype=np.int64)
        # Tokens no instruction holds match nothing, so leaving them out changes no LCS.
        chars = self._chars
        query = "".join([chars[i] for i in known])
        choices = itemgetter(*positions)(codes) if len(positions) > 1 else [codes[p] for p in positions]
        if len(choices) >= _CDIST_MIN:
            return cdist([query], choices, scorer=LCSseq.similarity, dtype=np.int32)[0].astype(np.int64)
        similarity = LCSseq.similarity
        return np.asarray([similarity(query, c) for c in choices], dtype=np.int64)

    def _result(self, positions: np.ndarray, scores: np.ndarray) -> NoveltyResult:
        if len(scores) == 0:
            return NoveltyResult(0.0, [])
        max_score = float(scores.max())
        above = np.flatnonzero(scores > self.report_floor)
        if len(above) == 0 or self.top_k == 0:
            return NoveltyResult(max_score, [])
        order = above[np.lexsort((positions[above], -scores[above]))[: self.top_k]]
        texts = self._texts
        top = [Match(texts[p], s, p) for p, s in zip(positions[order].tolist(), scores[order].tolist(), strict=True)]
        return NoveltyResult(max_score, top)

    # ----------------------------------------------------------------------------------------------- API

    def query(self, instruction: str) -> NoveltyResult:
        """Max F of ``instruction`` against the index, and its most similar instructions (module docs)."""
        return self._result(*self._search(rouge_tokens(instruction), self.report_floor, max(self.top_k, 1)))

    def max_similarity(self, instruction: str) -> tuple[float, list[tuple[str, float]]]:
        """:meth:`query` as plain tuples: ``(max_score, [(instruction, score), ...])``."""
        result = self.query(instruction)
        return result.max_score, [(match.instruction, match.score) for match in result.top]

    def nearest_all(
        self,
        instructions: Sequence[str],
        *,
        tokens: Sequence[Sequence[str]] | None = None,
        workers: int = 1,
        chunk_pairs: int = 4_000_000,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact nearest neighbour in the index of each of ``instructions``, scoring every pair.

        Returns ``(scores, positions)``: ``scores[i]`` is the exact maximum F of ``instructions[i]``
        against the index (the float :meth:`query` with ``report_floor=0.0`` gives), ``positions[i]`` the
        first indexed instruction reaching it (as :meth:`query` orders ties), or -1 when the maximum is 0.0
        (no shared token). Nothing is pruned: every pair goes through one rapidfuzz ``cdist`` call per
        chunk of at most ``chunk_pairs`` pairs. That is the fast way for a small index and many queries
        (each machine instruction against a few hundred seeds, in ``selfinstruct report``); for a large
        index use :meth:`query`. ``tokens``: the instructions' :func:`rouge_tokens`, when the caller has
        them already. ``workers`` is passed to ``cdist`` (-1: all cores).
        """
        count = len(instructions)
        scores = np.zeros(count, dtype=np.float64)
        positions = np.full(count, -1, dtype=np.int64)
        size = len(self._texts)
        if not size or not count:
            return scores, positions
        tokenized = rouge_tokens_many(instructions) if tokens is None else tokens
        if len(tokenized) != count:
            raise ValueError(f"{len(tokenized)} token lists for {count} instructions")
        if self._overflow or len(self._vocab) > self._code_capacity:  # pragma: no cover - > 1M distinct tokens
            for i, toks in enumerate(tokenized):
                found, scored = self._search(list(toks), 0.0, 1)
                if len(scored) and scored.max() > 0:
                    scores[i] = scored.max()
                    positions[i] = int(found[scored == scores[i]].min())
            return scores, positions
        # A token the index lacks matches nothing: the sentinel, which no indexed code contains.
        code_of = {token: self._chars[i] for token, i in self._vocab.items()}.get
        queries = ["".join([code_of(token, _SENTINEL) for token in toks]) for toks in tokenized]
        m_all = np.fromiter(map(len, tokenized), dtype=np.float64, count=count)
        n = self._lengths[:size].astype(np.float64)
        rows = max(1, chunk_pairs // size)
        for start in range(0, count, rows):
            stop = min(count, start + rows)
            lcs = cdist(queries[start:stop], self._codes, scorer=LCSseq.similarity, dtype=np.int32, workers=workers)
            m = m_all[start:stop]
            # F = 2·LCS/(m+n) exactly; distinct such rationals (denominators far below 2**26) are ordered
            # the same as their correctly rounded quotients, so the row maximum of LCS/(m+n) picks the
            # pairs that can hold the maximum F. Only those get rouge-score's float, in its order.
            ratio = lcs / np.maximum(n[None, :] + m[:, None], 1.0)  # LCS is 0 where either side is empty
            row_max = ratio.max(axis=1)
            r, c = np.nonzero((ratio == row_max[:, None]) & (row_max[:, None] > 0))
            lcs_f = lcs[r, c].astype(np.float64)
            precision = lcs_f / n[c]
            recall = lcs_f / m[r]
            f = 2 * precision * recall / (precision + recall)
            # Per row: the largest float, then the first position (np.lexsort: last key is primary).
            order = np.lexsort((c, -f, r))
            first = np.ones(len(order), dtype=bool)
            first[1:] = r[order][1:] != r[order][:-1]
            pick = order[first]
            scores[start + r[pick]] = f[pick]
            positions[start + r[pick]] = c[pick]
        return scores, positions

    def is_novel(self, instruction: str) -> bool:
        """True when ``instruction``'s max F against the index is ``<= threshold`` (an exact decision)."""
        _, scores = self._search(rouge_tokens(instruction), self.threshold, 0, stop_above=self.threshold)
        return not bool((scores > self.threshold).any())

    def filter_batch(self, candidates: Sequence[str], *, add: bool = True) -> list[NoveltyResult]:
        """Resolve a round's candidates in order; one :class:`NoveltyResult` per candidate.

        Candidate ``i`` is scored against the index **and** the earlier candidates of this batch that were
        accepted (``max_score <= threshold``); an accepted candidate joins the index at once (its
        :attr:`Match.index` is its position there). With ``add=False`` the index is left as it was
        (accepted candidates still count within the batch, at the positions they would have had). The
        caller decides with ``result.max_score > threshold``.
        """
        size = len(self._texts)
        results = []
        try:
            for text in candidates:
                tokens = rouge_tokens(text)
                result = self._result(*self._search(tokens, self.report_floor, max(self.top_k, 1)))
                results.append(result)
                if result.max_score <= self.threshold:
                    self._add(text, tokens)
        finally:
            if not add:
                self._truncate(size)
        return results
