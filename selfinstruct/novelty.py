"""Exact ROUGE-L novelty index: Self-Instruct's "keep if ROUGE-L F <= 0.7 against the whole pool" check.

Scope
-----
Self-Instruct keeps a generated instruction only if its ROUGE-L F-measure against every instruction
already in the pool is at most ``threshold`` (0.7); it is rejected when the maximum F is **greater** than
the threshold. The reference implementations score every (candidate, pool instruction) pair with
``rouge_score``, a pure-Python O(m·n) dynamic programme: a few thousand pairs per second. This module
gives the **same decisions and the same floats** (bit for bit) as

    rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False).score(target, prediction)["rougeL"].fmeasure

without scoring every pair:

* :func:`rouge_tokens` is rouge-score's default tokenizer without stemming: ``text.lower()``, every run of
  characters outside ``[a-z0-9]`` is a separator, the tokens are the maximal ``[a-z0-9]+`` runs (so
  accented and non-Latin letters vanish: ``"café"`` → ``["caf"]``).
* :func:`rouge_l_f` computes the score in rouge-score's float order: ``p = lcs / len(prediction)``,
  ``r = lcs / len(target)``, ``f = 2 * p * r / (p + r)`` (0.0 when ``p + r == 0``, and 0 when either
  token list is empty, as rouge-score returns). The LCS comes from rapidfuzz's bit-parallel kernel over
  token ids mapped to one code point each.
* Orientation: the pair is scored as Self-Instruct does (``_score_lcs(new_tokens, existing_tokens)``):
  **target = the candidate, prediction = the existing instruction**. The F-measure is exactly symmetric
  in floating point (``(2*p)*r`` and ``(2*r)*p`` round the same exact product, ``p + r`` commutes), so the
  other orientation yields the identical float; the tests check both.
* :class:`NoveltyIndex` never scores most pairs. ``F = 2·LCS/(m+n)`` and ``LCS <=`` the multiset overlap
  of the two token lists, so ``F > floor`` needs an overlap of more than ``floor·m/(2-floor)`` tokens
  (pigeonhole over the candidate's tokens, with a ``1e-9`` safety margin on ``floor``). The index keeps
  a posting list per (token, occurrence number) key; a query probes only its rarest keys (enough that
  any instruction above the floor must appear in at least one), bounds each hit's overlap by the number
  of probed lists it appears in plus the unprobed keys, and verifies the survivors with the exact LCS
  and the exact rouge-score float. No instruction whose true F exceeds the floor is ever pruned.

What a query returns
--------------------
A query has a *report floor* ``report_floor`` (``NoveltyIndex(report_floor=...)``; default: the
threshold, which is what keeps the speed targets; it must be ``<= threshold``):

* ``max_score`` is the **exact** maximum F over the index whenever that maximum exceeds ``report_floor``
  (so in particular whenever it exceeds the threshold: the accept/reject decision is always exact).
  When the true maximum is ``<= report_floor``, ``max_score`` is the largest exact score among the
  instructions the query happened to verify (0.0 when none), i.e. a lower bound of the true maximum that
  is itself ``<= report_floor``. With ``report_floor=0.0`` the maximum is always exact (every instruction
  sharing a token is verified; the rest score 0.0), at a higher query cost.
* ``top`` is exact: the ``top_k`` instructions with the highest F **among those with F > report_floor**
  (all of them are verified), score descending, ties by insertion order. It is empty when nothing in the
  index scores above the floor.

The index stores, per instruction, the text, one compact code-point string of token ids, its token count
(numpy) and one 4-byte entry per token in the posting lists (``array('i')``); no per-instruction Python
lists of tokens.
"""

from __future__ import annotations

import bisect
import math
import re
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from rapidfuzz.distance import LCSseq
from rapidfuzz.process import cdist

__all__ = ["Match", "NoveltyIndex", "NoveltyResult", "rouge_l_f", "rouge_tokens"]

DEFAULT_THRESHOLD = 0.7
DEFAULT_TOP_K = 10

# Pruning bounds are computed against ``floor - _EPS``: a pair is dropped only if even the exact rational
# 2·LCS/(m+n) (let alone its float, within a few ulps of it) cannot exceed the floor.
_EPS = 1e-9

# rouge-score: lowercase, replace [^a-z0-9]+ by a space, split on whitespace, keep ^[a-z0-9]+$ tokens;
# the tokens that survive are exactly the maximal [a-z0-9]+ runs of the lowercased text.
_TOKEN_RE = re.compile(r"[a-z0-9]+")

# Token ids become code points so an instruction is a short str that rapidfuzz compares natively. Ids skip
# the surrogate block; the last code point is a placeholder for ids beyond the code-point space.
_SURROGATE_START = 0xD800
_SURROGATE_SIZE = 0x800
_PLACEHOLDER = chr(0x10FFFF)
_CODE_CAPACITY = 0x10FFFF - _SURROGATE_SIZE  # token ids 0 .. _CODE_CAPACITY-1 get their own code point

# Posting lists are split by instruction length class (geometric, ratio ~1.2), so a query probes, per
# class, only as many keys as instructions of that length need. Posting key = token id << _KEY_SHIFT |
# occurrence number << _CLASS_BITS | length class.
_CLASS_BITS = 8
_KEY_SHIFT = 32 + _CLASS_BITS


def _class_starts() -> list[int]:
    starts = [0, 1]
    while starts[-1] < 2**31:
        starts.append(max(starts[-1] + 1, int(starts[-1] * 1.2)))
    return starts


_CLASS_STARTS = _class_starts()
_CLASS_STARTS_NP = np.asarray(_CLASS_STARTS, dtype=np.int64)
assert len(_CLASS_STARTS) <= 1 << _CLASS_BITS


def _length_class(n: int) -> int:
    return bisect.bisect_right(_CLASS_STARTS, n) - 1


def _length_classes(n: np.ndarray) -> np.ndarray:
    return np.searchsorted(_CLASS_STARTS_NP, n, side="right") - 1


# Above this many verification pairs, rapidfuzz's cdist (one C++ call) beats a Python loop.
_CDIST_MIN = 24


def rouge_tokens(text: str) -> list[str]:
    """rouge-score's default tokenization (no stemming) of ``text``."""
    return _TOKEN_RE.findall(text.lower())


def _fmeasure(lcs: int, target_len: int, prediction_len: int) -> float:
    """rouge-score's ``_score_lcs`` F-measure for an LCS length, in rouge-score's float order."""
    if target_len == 0 or prediction_len == 0:
        return 0.0
    precision = lcs / prediction_len
    recall = lcs / target_len
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


def _lcs_tokens(a: Sequence[str], b: Sequence[str]) -> int:
    """LCS length of two token lists (any hashable items), via rapidfuzz."""
    if not a or not b:
        return 0
    ids: dict[str, int] = {}
    ca = "".join(_code(ids.setdefault(t, len(ids))) for t in a)
    cb = "".join(_code(ids[t]) if t in ids else _PLACEHOLDER for t in b)
    return int(LCSseq.similarity(ca, cb))


def rouge_l_f(candidate: str, existing: str) -> float:
    """ROUGE-L F-measure of ``candidate`` (target) against ``existing`` (prediction), as rouge-score.

    Identical float to ``RougeScorer(["rougeL"]).score(candidate, existing)["rougeL"].fmeasure`` (and, the
    F-measure being symmetric, to ``.score(existing, candidate)``).
    """
    target = rouge_tokens(candidate)
    prediction = rouge_tokens(existing)
    return _fmeasure(_lcs_tokens(target, prediction), len(target), len(prediction))


def _code(token_id: int) -> str:
    """The code point standing for ``token_id`` (valid for ids below ``_CODE_CAPACITY``)."""
    return chr(token_id if token_id < _SURROGATE_START else token_id + _SURROGATE_SIZE)


def _decode(char: str) -> int:
    """Inverse of :func:`_code`."""
    point = ord(char)
    return point if point < _SURROGATE_START else point - _SURROGATE_SIZE


@dataclass(frozen=True)
class Match:
    """One indexed instruction and its ROUGE-L F against the query.

    ``index`` is the instruction's insertion position in the index (0-based).
    """

    instruction: str
    score: float
    index: int


@dataclass(frozen=True)
class NoveltyResult:
    """The result of one query: see the module docstring for the exact meaning of both fields.

    ``max_score`` is exact whenever it exceeds the index's ``report_floor`` (hence whenever it exceeds
    the threshold); ``top`` is the exact top-k among the instructions scoring above ``report_floor``.
    """

    max_score: float
    top: list[Match]


class NoveltyIndex:
    """A growing pool of instructions answering "max ROUGE-L F of this candidate against the pool".

    ``threshold``: a candidate is novel when its max F is ``<= threshold`` (Self-Instruct: 0.7).
    ``top_k``: how many most similar instructions a query reports. ``report_floor`` (default: the
    threshold, must be ``<= threshold``): queries find every instruction scoring above it exactly; see
    the module docstring. Scores are ``rouge_l_f(candidate, existing)``.
    """

    # Token ids at or beyond this get the placeholder code point and exact per-pair verification
    # (class attribute so tests can exercise the fallback with a tiny vocabulary).
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
        self._chars: list[str] = []  # token id -> its code point (placeholder beyond capacity)
        # (token id, occurrence number) -> insertion positions of the instructions holding it; the key is
        # the token id for a first occurrence, token_id + occurrence * 2**32 after that.
        self._postings: dict[int, array[int]] = {}
        self._texts: list[str] = []
        self._codes: list[str] = []
        self._lengths = np.zeros(1024, dtype=np.int32)
        self._max_length = 0
        self._overflow: dict[int, list[int]] = {}  # position -> token ids, for codes with placeholders
        for text in instructions:
            self.add(text)

    def __len__(self) -> int:
        return len(self._texts)

    # ----------------------------------------------------------------------------------------- building

    def _token_id(self, token: str) -> int:
        token_id = self._vocab.get(token)
        if token_id is None:
            token_id = self._vocab[token] = len(self._vocab)
            self._chars.append(_code(token_id) if token_id < self._code_capacity else _PLACEHOLDER)
        return token_id

    @staticmethod
    def _keys(ids: list[int]) -> list[int]:
        """Posting keys of token ids, one per (token, occurrence number), shifted for the class bits."""
        if len(set(ids)) == len(ids):
            return [i << _KEY_SHIFT for i in ids]
        seen: dict[int, int] = {}
        keys = []
        for token_id in ids:
            occurrence = seen.get(token_id, 0)
            seen[token_id] = occurrence + 1
            keys.append((token_id << _KEY_SHIFT) | (occurrence << _CLASS_BITS))
        return keys

    def add(self, instruction: str) -> None:
        """Append ``instruction`` to the index (no novelty check; see :meth:`filter_batch` for that)."""
        token_id = self._token_id
        ids = [token_id(t) for t in rouge_tokens(instruction)]
        position = len(self._texts)
        n = len(ids)
        if n:
            length_class = _length_class(n)
            postings = self._postings
            for key in self._keys(ids):
                key |= length_class
                posting = postings.get(key)
                if posting is None:
                    posting = postings[key] = array("i")
                posting.append(position)
        chars = self._chars
        code = "".join([chars[i] for i in ids])
        if _PLACEHOLDER in code:
            self._overflow[position] = ids
        if position == len(self._lengths):
            self._lengths = np.concatenate([self._lengths, np.zeros_like(self._lengths)])
        self._lengths[position] = n
        self._max_length = max(self._max_length, n)
        self._texts.append(instruction)
        self._codes.append(code)

    def _truncate(self, size: int) -> None:
        """Drop every instruction at position >= ``size`` (used to roll back a non-adding batch)."""
        for position in range(len(self._texts) - 1, size - 1, -1):
            code = self._codes[position]
            ids = self._overflow.pop(position, None) or [_decode(c) for c in code]
            if not ids:
                continue
            length_class = _length_class(len(ids))
            for key in self._keys(ids):
                posting = self._postings[key | length_class]
                posting.pop()
                if not posting:
                    del self._postings[key | length_class]
        del self._texts[size:]
        del self._codes[size:]
        self._lengths[size:] = 0
        self._max_length = int(self._lengths[:size].max()) if size else 0

    # ---------------------------------------------------------------------------------------- searching

    def _search(self, instruction: str, floor: float) -> tuple[np.ndarray, np.ndarray]:
        """Positions and exact scores of a superset of the instructions scoring above ``floor``.

        Every instruction whose F against ``instruction`` exceeds ``floor`` is in the result; the result
        may hold others (with their exact scores too).
        """
        empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64))
        tokens = rouge_tokens(instruction)
        m = len(tokens)
        if m == 0 or not self._texts:
            return empty
        vocab = self._vocab
        ids = [vocab.get(t, -1) for t in tokens]
        known = [i for i in ids if i >= 0]
        if not known:
            return empty
        n_unknown = m - len(known)
        keys = self._keys(known)
        g = floor - _EPS
        # Lengths n an instruction needs for F > floor against m tokens: LCS <= min(m, n).
        if g > 0:
            n_lo = max(1, math.floor(g * m / (2.0 - g) - _EPS) + 1)
            n_hi = min(self._max_length, math.floor(m * (2.0 - g) / g + _EPS))
        else:
            n_lo, n_hi = 1, self._max_length
        postings = self._postings
        lists: list[array[int]] = []
        unprobed = np.zeros(len(_CLASS_STARTS), dtype=np.int64)
        for length_class in range(_length_class(n_lo), _length_class(n_hi) + 1):
            # F > floor against n >= shortest tokens needs overlap >= need (pigeonhole over our keys):
            # of any m - need + 1 of our keys, one is shared. Probe the rarest ones in this class.
            shortest = max(_CLASS_STARTS[length_class], n_lo)
            need = max(1, math.floor(g * (m + shortest) / 2.0 - _EPS) + 1) if g > 0 else 1
            if need > m:
                break
            probes = m - need + 1 - n_unknown  # unknown tokens are empty lists: probed for free
            if probes <= 0:
                continue
            found = [postings.get(key | length_class) for key in keys]
            if len(found) - found.count(None) > probes:
                present = sorted((p for p in found if p is not None), key=len)
                # keys absent from this class are empty lists, the rarest of all
                present = present[: max(0, probes - (len(found) - len(present)))]
            else:
                present = [p for p in found if p is not None]
                probes = len(present) + (len(found) - len(present))
            lists.extend(present)
            unprobed[length_class] = m - n_unknown - probes
        if not lists:
            return empty
        hits = np.frombuffer(b"".join(lists), dtype=np.int32)
        size = len(self._texts)
        if len(hits) * 8 >= size:
            counts_all = np.bincount(hits, minlength=size)
            cand = np.flatnonzero(counts_all)
            counts = counts_all[cand]
        else:
            cand, counts = np.unique(hits, return_counts=True)
        n = self._lengths[cand]
        upper = np.minimum(np.minimum(counts + unprobed[_length_classes(n)], n), m)
        keep = 2 * upper > g * (m + n)
        cand = cand[keep]
        if len(cand) == 0:
            return empty
        n = n[keep]
        lcs = self._verify(known, cand)
        # rouge-score's float order, vectorised (IEEE double ops, identical to the scalar formula).
        lcs_f = lcs.astype(np.float64)
        precision = lcs_f / n
        recall = lcs_f / m
        denom = precision + recall
        with np.errstate(invalid="ignore", divide="ignore"):
            scores = np.where(denom > 0, 2 * precision * recall / denom, 0.0)
        return cand.astype(np.int64), scores

    def _verify(self, known: list[int], cand: np.ndarray) -> np.ndarray:
        """Exact LCS lengths between the query's token ids and the instructions at ``cand``."""
        codes = self._codes
        capacity = self._code_capacity
        positions = cand.tolist()
        if any(i >= capacity for i in known) or any(p in self._overflow for p in positions):
            # Some ids share the placeholder code point: compare exact id sequences instead.
            out = []
            for p in positions:
                seq = self._overflow.get(p) or [_decode(c) for c in codes[p]]
                out.append(LCSseq.similarity(known, seq) if seq else 0)
            return np.asarray(out, dtype=np.int64)
        # Unknown tokens match nothing, so dropping them leaves every LCS unchanged.
        chars = self._chars
        query = "".join([chars[i] for i in known])
        choices = [codes[p] for p in positions]
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
        order = np.lexsort((positions[above], -scores[above]))[: self.top_k]
        texts = self._texts
        top = [
            Match(texts[int(positions[j])], float(scores[j]), int(positions[j]))
            for j in above[order].tolist()
        ]
        return NoveltyResult(max_score, top)

    def query(self, instruction: str) -> NoveltyResult:
        """Max F of ``instruction`` against the index and its most similar instructions (module docs)."""
        return self._result(*self._search(instruction, self.report_floor))

    def max_similarity(self, instruction: str) -> tuple[float, list[tuple[str, float]]]:
        """``(max_score, [(instruction, score), ...])``: :meth:`query` as plain tuples."""
        result = self.query(instruction)
        return result.max_score, [(m.instruction, m.score) for m in result.top]

    def is_novel(self, instruction: str) -> bool:
        """True when ``instruction``'s max F against the index is ``<= threshold`` (exact decision)."""
        _, scores = self._search(instruction, self.threshold)
        return not bool((scores > self.threshold).any())

    def filter_batch(self, candidates: Sequence[str], *, add: bool = True) -> list[NoveltyResult]:
        """Resolve a round's candidates in order; one :class:`NoveltyResult` per candidate.

        Candidate ``i`` is scored against the index **and** the earlier candidates of this batch that
        were accepted (``max_score <= threshold``); an accepted candidate is added to the index at once
        (its :attr:`Match.index` is its position there). With ``add=False`` the index is left as it was
        afterwards (accepted candidates still count within the batch, at the positions they would have
        had). The caller decides with ``result.max_score > threshold``.
        """
        size = len(self._texts)
        results = []
        try:
            for text in candidates:
                result = self.query(text)
                results.append(result)
                if result.max_score <= self.threshold:
                    self.add(text)
        finally:
            if not add:
                self._truncate(size)
        return results
