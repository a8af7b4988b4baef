"""The novelty index against rouge-score itself: same tokens, same floats, same decisions, same top-k."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer

from selfinstruct.gates import novelty
from selfinstruct.gates.novelty import Match, NoveltyIndex, NoveltyResult, rouge_l_f, rouge_tokens

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
TOKENIZE = SCORER._tokenizer.tokenize


def ref_f(target: str, prediction: str) -> float:
    """The reference: rouge-score's ROUGE-L F-measure."""
    return SCORER.score(target, prediction)["rougeL"].fmeasure


def ref_scores(candidate: str, pool: list[str]) -> list[float]:
    """Self-Instruct's loop: ``_score_lcs(new_tokens, existing_tokens)`` against every pool instruction."""
    new = TOKENIZE(candidate)
    return [rouge_scorer._score_lcs(new, TOKENIZE(p)).fmeasure for p in pool]


EDGE_TEXTS = [
    "",
    "   ",
    "!!! ??? ...",
    "Hello, world!",
    "hello world",
    "HELLO WORLD",
    "Hello-world: hello_world (hello)world",
    "Write a Python function that returns 42.",
    "Write 3 Python functions that return 42 or 4.2",
    "Café crème brûlée naïve résumé",
    "caf cr me br l e na ve r sum",
    "Привет мир, 你好世界, مرحبا بالعالم",
    "日本語のテキスト only ascii survives",
    "İstanbul KELVIN ﬁle straße ẞ",  # characters whose lowercase is (partly) ASCII
    "tabs\tand\nnewlines\r\nand\u00a0nbsp\u2003em-space",
    "the the the the the",
    "the cat the cat the cat",
    "a b c d e f g h i j",
    "j i h g f e d c b a",
    "x1 x2 x3 1x 2x 3x 123 0 00 007",
    "word " * 300,
    " ".join(f"w{i % 37}" for i in range(500)),
    "Summarise the following paragraph in one sentence.",
    "Summarize the following paragraph in a single sentence.",
    "Summarise the following paragraph in one sentence!",
    "😀 emoji 🎉 party",
]


@pytest.mark.parametrize("text", EDGE_TEXTS)
def test_tokens_match_rouge_score(text: str) -> None:
    assert rouge_tokens(text) == TOKENIZE(text)


@pytest.mark.parametrize("a", EDGE_TEXTS)
def test_rouge_l_f_matches_rouge_score_on_edge_cases(a: str) -> None:
    for b in EDGE_TEXTS:
        expected = ref_f(a, b)
        assert rouge_l_f(a, b) == expected
        assert rouge_l_f(b, a) == expected  # F is symmetric to the last bit


def test_empty_after_tokenising_scores_zero() -> None:
    assert rouge_l_f("", "anything at all") == 0.0
    assert rouge_l_f("!!!", "???") == 0.0
    assert rouge_l_f("Привет", "Привет") == 0.0  # no ASCII token survives
    assert ref_f("Привет", "Привет") == 0


def test_identical_strings_score_one() -> None:
    assert rouge_l_f("The cat sat.", "the CAT sat") == 1.0


# Text from a mix of ASCII, punctuation, whitespace, accented and non-Latin characters and the few
# characters whose lowercase form contains ASCII letters.
ALPHABET = st.sampled_from(list("abcxyzABCXYZ0129 ,.-!?\t\né漢ßİKﬁ\u00a0_'"))
TEXT = st.text(alphabet=ALPHABET, max_size=60)
WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "Cat", "THE", "2", "x"]
SEPARATORS = [" ", "  ", ", ", ". ", "-", "\n", " é "]


@st.composite
def sentences(draw: st.DrawFn, max_words: int = 14) -> str:
    """Short sentences over a tiny vocabulary, so that high ROUGE-L scores are common."""
    words = draw(st.lists(st.sampled_from(WORDS), max_size=max_words))
    out = ""
    for word in words:
        out += word + draw(st.sampled_from(SEPARATORS))
    return out


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_tokens_property(text: str) -> None:
    assert rouge_tokens(text) == TOKENIZE(text)


@settings(max_examples=300, deadline=None)
@given(st.one_of(TEXT, sentences()), st.one_of(TEXT, sentences()))
def test_rouge_l_f_property(a: str, b: str) -> None:
    expected = ref_f(a, b)
    assert rouge_l_f(a, b) == expected
    assert ref_f(b, a) == expected  # both orientations of the reference agree, bit for bit
    assert rouge_l_f(b, a) == expected


def brute(candidate: str, pool: list[str]) -> list[float]:
    return ref_scores(candidate, pool)


def check_result(result: NoveltyResult, scores: list[float], floor: float, top_k: int, pool: list[str]) -> None:
    """``result`` obeys the documented contract against the reference scores."""
    true_max = max(scores, default=0.0)
    if true_max > floor:
        assert result.max_score == true_max
    else:
        assert 0.0 <= result.max_score <= true_max
        assert result.max_score <= floor
    expected = sorted(((s, i) for i, s in enumerate(scores) if s > floor), key=lambda x: (-x[0], x[1]))
    expected_top = [Match(pool[i], s, i) for s, i in expected[:top_k]]
    assert result.top == expected_top


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pool=st.lists(sentences(), max_size=25),
    queries=st.lists(st.one_of(sentences(), TEXT), min_size=1, max_size=4),
    floor=st.sampled_from([0.0, 0.3, 0.5, 0.7]),
    top_k=st.integers(0, 5),
)
def test_index_matches_brute_force(pool: list[str], queries: list[str], floor: float, top_k: int) -> None:
    index = NoveltyIndex(pool, top_k=top_k, threshold=0.7, report_floor=floor)
    assert len(index) == len(pool)
    for q in queries:
        scores = brute(q, pool)
        result = index.query(q)
        check_result(result, scores, floor, top_k, pool)
        assert index.is_novel(q) == (max(scores, default=0.0) <= 0.7)
        # the other orientation (target = existing, prediction = candidate) decides the same
        assert index.is_novel(q) == (max((ref_f(p, q) for p in pool), default=0.0) <= 0.7)
        max_score, top = index.max_similarity(q)
        assert max_score == result.max_score
        assert top == [(m.instruction, m.score) for m in result.top]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pool=st.lists(sentences(), max_size=30), queries=st.lists(sentences(), min_size=1, max_size=3))
def test_index_exact_with_split_lists_and_overflow_codes(pool: list[str], queries: list[str]) -> None:
    """Lists split by length class, both hit-counting paths and token ids beyond the code-point space."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(novelty, "_SPLIT_AT", 3)
        mp.setattr(novelty, "_BINCOUNT_RATIO", 1000)
        mp.setattr(NoveltyIndex, "_code_capacity", 4)
        for floor in (0.0, 0.7):
            index = NoveltyIndex(pool, report_floor=floor, top_k=3)
            for q in queries:
                check_result(index.query(q), brute(q, pool), floor, 3, pool)


def random_pool(rng: random.Random, size: int, vocab: int) -> list[str]:
    words = [f"w{i}" for i in range(vocab)]
    pool = []
    for _ in range(size):
        if pool and rng.random() < 0.4:  # a near-duplicate of an earlier instruction
            base = rng.choice(pool).split()
            for _ in range(rng.randint(0, 4)):
                op = rng.random()
                if op < 0.4 and base:
                    base.pop(rng.randrange(len(base)))
                elif op < 0.8:
                    base.insert(rng.randrange(len(base) + 1), rng.choice(words))
                elif base:
                    base[rng.randrange(len(base))] = rng.choice(words)
            pool.append(" ".join(base))
        else:
            n = rng.randint(1, 30)
            pool.append(" ".join(rng.choices(words, weights=[1 / (i + 1) for i in range(vocab)], k=n)))
    return pool


@pytest.mark.parametrize("split_at", [2, 2048, 0])
def test_index_matches_brute_force_on_a_larger_pool(monkeypatch: pytest.MonkeyPatch, split_at: int) -> None:
    if split_at:
        monkeypatch.setattr(novelty, "_SPLIT_AT", split_at)
    else:
        search_hard(monkeypatch)
    rng = random.Random(split_at)
    pool = random_pool(rng, 400, 60)
    queries = random_pool(rng, 40, 60)[:20] + rng.sample(pool, 10)
    index = NoveltyIndex(pool, top_k=5)
    low = NoveltyIndex(pool, top_k=5, report_floor=0.4)
    for q in queries:
        scores = brute(q, pool)
        check_result(index.query(q), scores, 0.7, 5, pool)
        check_result(low.query(q), scores, 0.4, 5, pool)


def search_hard(mp: pytest.MonkeyPatch) -> None:
    """Make every query probe (reading one list), verify one candidate at a time and split every list."""
    mp.setattr(novelty, "_PROBE_FROM", 0)
    mp.setattr(novelty, "_PROBE_BUDGET", 1)
    mp.setattr(novelty, "_PROBE_VERIFY", 1)
    mp.setattr(novelty, "_FIRST_CHUNK", 1)
    mp.setattr(novelty, "_CHUNK_GROWTH", 2)
    mp.setattr(novelty, "_SPLIT_AT", 2)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pool=st.lists(sentences(), max_size=30),
    queries=st.lists(st.one_of(sentences(), TEXT), min_size=1, max_size=3),
    floor=st.sampled_from([0.0, 0.3, 0.7]),
    top_k=st.integers(0, 5),
)
def test_best_first_search_and_probe_stay_exact(pool: list[str], queries: list[str], floor: float, top_k: int) -> None:
    """The probe's first cutoff and the bound-ordered verification in chunks of one change no answer."""
    with pytest.MonkeyPatch.context() as mp:
        search_hard(mp)
        index = NoveltyIndex(pool, top_k=top_k, report_floor=floor)
        for q in queries:
            scores = brute(q, pool)
            check_result(index.query(q), scores, floor, top_k, pool)
            assert index.is_novel(q) == (max(scores, default=0.0) <= 0.7)


def constructed_pool(m: int) -> tuple[str, list[str]]:
    """A query of ``m`` tokens and, for every length n and LCS l, an instruction sharing l of them in order.

    Many pairs share one rational F = 2l/(m+n) and rouge-score's float order turns some of them into
    neighbouring floats (0.7 and 0.7000000000000001): the k-th best is full of exact and near ties.
    """
    query = [f"q{i}" for i in range(m)]
    pool = []
    for n in range(1, 2 * m + 1):
        for lcs in range(min(m, n) + 1):
            pool.append(" ".join(query[:lcs] + [f"o{n}x{lcs}x{i}" for i in range(n - lcs)]))
    return " ".join(query), pool


@pytest.mark.parametrize("m", [7, 10, 13, 20])
@pytest.mark.parametrize("floor", [0.0, 0.5, 0.7])
def test_top_k_exact_among_ties_and_neighbouring_floats(m: int, floor: float) -> None:
    query, pool = constructed_pool(m)
    rng = random.Random(m)
    rng.shuffle(pool)
    scores = brute(query, pool)
    with pytest.MonkeyPatch.context() as mp:
        search_hard(mp)
        for top_k in (1, 3, 5, 12):
            index = NoveltyIndex(pool, top_k=top_k, report_floor=floor)
            check_result(index.query(query), scores, floor, top_k, pool)
    for top_k in (1, 5):
        check_result(NoveltyIndex(pool, top_k=top_k, report_floor=floor).query(query), scores, floor, top_k, pool)


def test_decision_verifies_past_a_misleading_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """The highest bound (all tokens shared, scrambled) scores low; the decision goes on to the next one."""
    search_hard(monkeypatch)
    index = NoveltyIndex(["d c b a e", "e d c b a", "a b c d x"])
    assert rouge_l_f("a b c d e", "a b c d x") > 0.7 > rouge_l_f("a b c d e", "d c b a e")
    assert not index.is_novel("a b c d e")
    assert index.is_novel("a b c d e f g h")  # F = 2·4/(8+5) against "a b c d x": all verified, none above


def index_state(index: NoveltyIndex) -> dict[str, object]:
    """Everything an index holds, in comparable form."""

    def plain(entry: object) -> object:
        return {c: list(p) for c, p in entry.items()} if isinstance(entry, dict) else list(entry)  # type: ignore[call-overload]

    size = len(index)
    return {
        "vocab": index._vocab,
        "chars": index._chars,
        "postings": {key: plain(entry) for key, entry in index._postings.items()},
        "texts": index._texts,
        "codes": index._codes,
        "lengths": index._lengths[:size].tolist(),
        "classes": index._classes[:size].tolist(),
        "class_sizes": index._class_sizes,
        "max_length": index._max_length,
        "overflow": index._overflow,
    }


@pytest.mark.parametrize(
    ("split_at", "capacity"), [(2048, novelty._CODE_CAPACITY), (3, novelty._CODE_CAPACITY), (3, 5)]
)
def test_extend_builds_the_same_index_as_add(monkeypatch: pytest.MonkeyPatch, split_at: int, capacity: int) -> None:
    """The bulk path: same token ids, codes, posting lists (split or not), overflow ids, whatever the chunking."""
    monkeypatch.setattr(novelty, "_SPLIT_AT", split_at)
    monkeypatch.setattr(novelty, "_BULK_MIN", 2)
    monkeypatch.setattr(novelty, "_BULK_CHUNK", 97)
    monkeypatch.setattr(NoveltyIndex, "_code_capacity", capacity)
    rng = random.Random(split_at + capacity)
    texts = EDGE_TEXTS + random_pool(rng, 1200, 40) + ["", "!!!"] * 60 + EDGE_TEXTS  # grows past 1,024
    one_by_one = NoveltyIndex()
    for text in texts:
        one_by_one.add(text)
    bulk = NoveltyIndex(texts)
    assert index_state(bulk) == index_state(one_by_one)
    mixed = NoveltyIndex(texts[:50])  # extending a built index, after single adds
    mixed.add(texts[50])
    mixed.extend(iter(texts[51:]))
    assert index_state(mixed) == index_state(one_by_one)
    for q in texts[:40:3]:
        assert bulk.query(q) == one_by_one.query(q)


@pytest.mark.parametrize(
    ("m", "n", "lcs"), [(10, 10, 7), (7, 13, 7), (13, 7, 7), (20, 20, 14), (25, 15, 14), (40, 60, 35), (50, 50, 35)]
)
def test_decisions_at_the_exact_threshold(m: int, n: int, lcs: int) -> None:
    """Pairs whose rational F is exactly 0.7: the decision follows rouge-score's float, whatever it is."""
    shared = [f"s{i}" for i in range(lcs)]
    a = " ".join(shared + [f"a{i}" for i in range(m - lcs)])
    b = " ".join([f"b{i}" for i in range(n - lcs)] + shared)
    expected = ref_f(a, b)
    assert rouge_l_f(a, b) == expected
    index = NoveltyIndex([b])
    assert index.is_novel(a) == (expected <= 0.7)
    result = index.query(a)
    if expected > 0.7:
        assert result.max_score == expected
    else:
        assert result.max_score <= 0.7
    assert NoveltyIndex([b], report_floor=0.0).query(a).max_score == expected


def test_top_k_order_score_then_insertion_order() -> None:
    pool = ["the cat sat on the mat", "a dog", "the cat sat on the mat", "the cat sat on a mat", "the cat"]
    index = NoveltyIndex(pool, top_k=3, report_floor=0.0)
    result = index.query("the cat sat on the mat")
    assert result.max_score == 1.0
    assert [(m.index, m.score) for m in result.top] == [
        (0, 1.0),
        (2, 1.0),
        (3, ref_f("the cat sat on the mat", pool[3])),
    ]
    assert [m.instruction for m in result.top] == [pool[0], pool[2], pool[3]]


def test_default_floor_reports_only_above_threshold() -> None:
    index = NoveltyIndex(["write a poem about the sea", "list three colours"])
    novel = index.query("write a story about a dragon")
    assert novel.top == []
    assert novel.max_score <= 0.7
    dup = index.query("Write a poem about the sea!")
    assert dup.max_score == 1.0
    assert dup.top == [Match("write a poem about the sea", 1.0, 0)]


def sequential_reference(pool: list[str], candidates: list[str], threshold: float = 0.7) -> list[float]:
    """Max score of each candidate against the pool plus the earlier accepted candidates."""
    kept = list(pool)
    maxima = []
    for c in candidates:
        best = max(ref_scores(c, kept), default=0.0)
        maxima.append(best)
        if best <= threshold:
            kept.append(c)
    return maxima


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pool=st.lists(sentences(), max_size=10), candidates=st.lists(sentences(), max_size=12))
def test_filter_batch_resolves_in_order(pool: list[str], candidates: list[str]) -> None:
    maxima = sequential_reference(pool, candidates)
    index = NoveltyIndex(pool)
    results = index.filter_batch(candidates)
    assert len(results) == len(candidates)
    for result, best in zip(results, maxima, strict=True):
        assert (result.max_score > 0.7) == (best > 0.7)
        if best > 0.7:
            assert result.max_score == best
    assert len(index) == len(pool) + sum(best <= 0.7 for best in maxima)


def test_filter_batch_in_round_duplicates_and_add_false() -> None:
    pool = ["translate the sentence into french"]
    candidates = [
        "write a haiku about autumn leaves",
        "Write a haiku about autumn leaves.",  # duplicate of an accepted in-round candidate
        "translate the sentence into french please",  # too close to the pool
        "explain recursion to a child",
        "explain recursion to a small child",  # close to candidate 3
    ]
    index = NoveltyIndex(pool)
    before = index.query(candidates[1])
    results = index.filter_batch(candidates, add=False)
    decisions = [r.max_score > 0.7 for r in results]
    assert decisions == [False, True, True, False, True]
    assert results[1].top == [Match(candidates[0], 1.0, 1)]  # the position it would have had
    assert len(index) == 1  # rolled back
    assert index.query(candidates[1]) == before
    assert index.is_novel(candidates[0])

    results_added = index.filter_batch(candidates)
    assert [r.max_score > 0.7 for r in results_added] == decisions
    assert len(index) == 3
    assert not index.is_novel("write a haiku about autumn leaves")
    assert index.query("explain recursion to a child").top[0] == Match(candidates[3], 1.0, 2)


def test_add_false_rollback_restores_split_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(novelty, "_SPLIT_AT", 2)
    pool = ["a b c d", "a b c e", "a b x y z"]
    index = NoveltyIndex(pool, report_floor=0.0)
    before = [index.query(q) for q in [*pool, "a b c"]]
    index.filter_batch(["a b c d e f", "q r s", "a b c d e f g", "a a a b"], add=False)
    assert len(index) == 3
    assert [index.query(q) for q in [*pool, "a b c"]] == before


def test_add_and_len() -> None:
    index = NoveltyIndex()
    assert len(index) == 0
    assert index.query("anything") == NoveltyResult(0.0, [])
    assert index.is_novel("anything")
    index.add("")
    index.add("!!!")
    assert len(index) == 2
    assert index.query("!!!") == NoveltyResult(0.0, [])  # empty token lists score 0 against anything
    index.add("anything goes")
    assert not index.is_novel("Anything goes.")


def test_threshold_parameter() -> None:
    index = NoveltyIndex(["one two three four five"], threshold=0.5)
    assert rouge_l_f("one two three x y", "one two three four five") == 0.6
    assert not index.is_novel("one two three x y")
    assert index.is_novel("one two x y z")  # F = 0.4


@pytest.mark.parametrize(
    "kwargs",
    [{"top_k": -1}, {"threshold": 1.5}, {"threshold": -0.1}, {"report_floor": 0.8}, {"report_floor": -0.1}],
)
def test_invalid_arguments(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        NoveltyIndex(**kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ all pairs: nearest_all


def test_rouge_tokens_many_matches_one_by_one() -> None:
    texts = [*EDGE_TEXTS, "has a \x00 NUL inside", ""]
    assert novelty.rouge_tokens_many(texts) == [rouge_tokens(t) for t in texts]
    assert novelty.rouge_tokens_many(EDGE_TEXTS) == [rouge_tokens(t) for t in EDGE_TEXTS]
    assert novelty.rouge_tokens_many([]) == []


def check_nearest(index_texts: list[str], queries: list[str], **kwargs: int) -> None:
    index = NoveltyIndex(index_texts, top_k=1, report_floor=0.0)
    scores, positions = index.nearest_all(queries, **kwargs)
    for query, score, position in zip(queries, scores.tolist(), positions.tolist(), strict=True):
        reference = [ref_f(query, t) for t in index_texts]
        best = max(reference, default=0.0)
        assert score == best  # the exact float, bit for bit
        assert position == (reference.index(best) if best > 0 else -1)  # ties: the first indexed
        result = index.query(query)
        assert result.max_score == score and (result.top[0].index if result.top else -1) == position


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index_texts=st.lists(sentences(), max_size=12), queries=st.lists(st.one_of(sentences(), TEXT), max_size=8))
def test_nearest_all_matches_rouge_score(index_texts: list[str], queries: list[str]) -> None:
    check_nearest(index_texts, queries)


@pytest.mark.parametrize("chunk_pairs", [1, 7, 4_000_000])
def test_nearest_all_on_edge_texts_in_chunks(chunk_pairs: int) -> None:
    check_nearest(EDGE_TEXTS[:13], EDGE_TEXTS, chunk_pairs=chunk_pairs)
    check_nearest(["a b", "b a", "a b"], ["a b", "b a b a", "c"], chunk_pairs=chunk_pairs)  # ties: first wins


def test_nearest_all_empty_and_mismatched_tokens() -> None:
    scores, positions = NoveltyIndex().nearest_all(["anything"])
    assert scores.tolist() == [0.0] and positions.tolist() == [-1]
    with pytest.raises(ValueError, match="2 token lists for 1"):
        NoveltyIndex(["a b"]).nearest_all(["a"], tokens=[["a"], ["b"]])
