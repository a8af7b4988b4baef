"""The verb–noun structure of instructions, as the Self-Instruct paper analyses its generated tasks.

The paper parses each instruction, takes the verb closest to the root of the parse and its first direct
noun object, and draws the most common verbs with their most common nouns. This module does the same
with spaCy's dependency parser when it is installed with an English pipeline (the optional extra
``selfinstruct[parse]``, then ``python -m spacy download en_core_web_sm`` or any ``en_core_web_*``): the
root of the first sentence if it is a verb, its lemma, and the lemma of its first ``dobj``/``obj`` child that is a noun.

``--parser auto`` decides with :func:`importlib.util.find_spec` alone, without importing spaCy (which
loads torch where that is installed): spaCy with the pipeline named, or with any installed
``en_core_web_*`` pipeline (the small one first).

Without spaCy it falls back to a plainly labelled heuristic that reads no grammar: the first word is taken
as the verb when it is a common imperative verb or ends like one (so "What is ...", "The sentence below
..." and "John has ..." give no pair), and the first following content word within a few words,
crudely singularised, as its noun. It is right for the common imperative shape ("Write a poem about ...",
"Classify the sentiment ...") and wrong for others; the report says which method produced its figure.

Scope: extraction and counting only. No file reading, no printing.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from selfinstruct.errors import ConfigError

DEFAULT_SPACY_MODEL = "en_core_web_sm"
METHODS = ("auto", "spacy", "heuristic")

HEURISTIC_NOTE = (
    "heuristic, not a parse ({why}): the first word as the verb when it is one of ~300 common imperative "
    "verbs or looks like one (-ize, -ify, -ate); the first content word after it as the noun"
)
PIPELINE_PREFIX = "en_core_web_"
_PREFERENCE = ("sm", "md", "lg", "trf")  # the small pipeline first: it parses fastest

# First words that are not an imperative verb: no pair is taken from such an instruction.
_NOT_VERBS = frozenset(
    """what which who whom whose when where why how is are was were be been am do does did can could will would
    shall should may might must have has had i you he she it we they me him her us them my your his its our
    their this that these those the a an some any each every all both either neither no not there here if
    in on at by for from with without about as of to into onto over under after before during since until
    while because although though and or but so yet given using based according please let suppose imagine
    assume consider""".split()  # noqa: SIM905
)
# Words between the verb and its noun that are not the noun (determiners, quantifiers, common adjectives).
_NOT_NOUNS = _NOT_VERBS | frozenset(
    """following given below above new short brief long simple good few many several more most other another
    same different creative detailed funny random single possible main best original appropriate suitable
    correct complete one two three four five six seven eight nine ten first second last next own out up down
    off away back me myself yourself""".split()  # noqa: SIM905
)
# Imperative verbs that open instructions. A first word outside this list is a verb only if it ends like
# one (-ize, -ise, -ify, -ate): "Toolformer is ..." or "John has ..." then gives no pair.
_VERBS = frozenset(
    """add adapt adjust advise align allocate analyse analyze annotate answer apply approximate argue arrange
    ask assess assign associate break brainstorm build calculate categorize categorise change check choose
    cite clarify classify clean collect combine come compare compile complete compose compute condense
    connect construct continue contrast convert copy correct count craft create critique cut debug decide
    decode define delete derive describe design detect determine develop devise diagnose discuss distinguish
    divide do document draft draw edit elaborate eliminate embed emphasize encode enumerate estimate evaluate
    examine expand explain explore express extract fill filter find finish fix flag follow forecast format
    formulate gather generate get give go group guess help highlight identify illustrate imagine implement
    improve include indicate infer insert interpret introduce invent investigate join judge justify keep
    label learn link list locate look make map mark match measure mention merge modify name negate normalize
    note offer optimize order organize outline paraphrase parse perform pick plan play point predict prepare
    present prioritize produce program proofread propose prove provide put rank rate read reason rearrange
    recommend reconstruct record recreate reduce refactor refine reformat reformulate remove rename reorder
    rephrase replace reply report represent request research resolve respond restate restructure retrieve
    return reverse review revise rewrite rhyme rotate round say schedule score search select send separate
    sequence set share shorten show simplify simulate sing solve sort specify spell split state structure
    study substitute subtract suggest sum summarize summarise supply swap take talk teach tell test think
    tokenize track train transcribe transform translate transpose try turn underline understand update use
    validate verify visualize walk weigh work write""".split()  # noqa: SIM905
)
_VERB_ENDINGS = ("ize", "ise", "ify", "ate")
_WORD_RE = re.compile(r"[A-Za-z][A-Za-z'-]*")
_NOUN_WINDOW = 4  # the noun must come within this many words after the verb


def _singular(word: str) -> str:
    """A crude singular: ``stories`` → ``story``, ``sentences`` → ``sentence``, ``class`` stays."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def heuristic_pair(instruction: str) -> tuple[str | None, str | None]:
    """``(verb, noun)`` by the heuristic of the module docstring; ``(None, None)`` when no verb is found.

    >>> heuristic_pair("Write a short poem about the sea.")
    ('write', 'poem')
    >>> heuristic_pair("What is the capital of France?")
    (None, None)
    """
    words = _WORD_RE.findall(instruction[:400])
    if not words:
        return None, None
    verb = words[0].lower()
    if verb in _NOT_VERBS or len(verb) < 2 or not (verb in _VERBS or verb.endswith(_VERB_ENDINGS)):
        return None, None
    for word in words[1 : 1 + _NOUN_WINDOW]:
        lower = word.lower().strip("'-")
        if lower and lower not in _NOT_NOUNS and len(lower) > 1:
            return verb, _singular(lower)
    return verb, None


@dataclass
class VerbNoun:
    """The verb–noun pairs of a set of instructions and how they were found."""

    method: str  # "spacy:<pipeline> <version>" or "heuristic"
    note: str
    pairs: list[tuple[str | None, str | None]]

    def summary(self, *, top_verbs: int = 20, top_nouns: int = 4) -> dict[str, Any]:
        """JSON-ready counts: the top verbs, each with its top nouns (the paper's Figure 2 shows 20 and 4)."""
        verbs: Counter[str] = Counter()
        nouns: dict[str, Counter[str]] = {}
        with_pair = 0
        for verb, noun in self.pairs:
            if verb is None:
                continue
            verbs[verb] += 1
            if noun is not None:
                with_pair += 1
                nouns.setdefault(verb, Counter())[noun] += 1
        total = len(self.pairs)
        return {
            "method": self.method,
            "note": self.note,
            "instructions": total,
            "with_verb": sum(verbs.values()),
            "with_verb_noun": with_pair,
            "distinct_verbs": len(verbs),
            "distinct_pairs": sum(len(c) for c in nouns.values()),
            "top": [
                {
                    "verb": verb[:40],  # a lemma of model text: kept short on the page
                    "count": count,
                    "nouns": [
                        {"noun": n[:40], "count": c} for n, c in nouns.get(verb, Counter()).most_common(top_nouns)
                    ],
                }
                for verb, count in verbs.most_common(top_verbs)
            ],
        }


def _load_spacy(model: str) -> Any:
    """The spaCy pipeline ``model`` without its named-entity recogniser; ConfigError when unavailable."""
    try:
        import spacy
    except ImportError:
        raise ConfigError(
            "the verb-noun analysis with a parser needs spaCy: pip install 'selfinstruct[parse]' and "
            f"python -m spacy download {model} (or use --parser heuristic)"
        ) from None
    try:
        return spacy.load(model, exclude=["ner"])
    except OSError:
        raise ConfigError(
            f"spaCy is installed but its pipeline {model!r} is not: python -m spacy download {model} "
            "(or use --parser heuristic)"
        ) from None


def _find_spec(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a broken or odd package counts as not installed
        return False


def installed_pipelines() -> list[str]:
    """The installed ``en_core_web_*`` pipeline packages, the small one first; found on ``sys.path``
    without importing spaCy or any pipeline."""
    import pkgutil

    names = {m.name for m in pkgutil.iter_modules() if m.name.startswith(PIPELINE_PREFIX)}

    def rank(name: str) -> tuple[int, str]:
        size = name[len(PIPELINE_PREFIX) :]
        return (_PREFERENCE.index(size) if size in _PREFERENCE else len(_PREFERENCE), name)

    return sorted(names, key=rank)


def choose_parser(method: str, model: str | None) -> tuple[str | None, str]:
    """``(pipeline, why)`` for ``method``: the spaCy pipeline to load (None: the heuristic) and, for the
    heuristic under ``auto``, why. Decides with :func:`importlib.util.find_spec` only, so that ``auto``
    costs nothing where spaCy is absent (importing spaCy loads torch where it is installed)."""
    if method == "heuristic":
        return None, "asked for with --parser heuristic"
    if method == "spacy":
        return model or DEFAULT_SPACY_MODEL, ""
    if not _find_spec("spacy"):
        return None, "spaCy is not installed"
    if model is not None:
        if _find_spec(model):
            return model, ""
        return None, f"spaCy is installed but its pipeline {model} is not"
    found = installed_pipelines()
    if found:
        return found[0], ""
    return None, f"spaCy is installed but no {PIPELINE_PREFIX}* pipeline is"


def spacy_available(model: str | None = None) -> bool:
    """Whether ``--parser auto`` would use spaCy (with ``model``, or any English pipeline when None)."""
    return choose_parser("auto", model)[0] is not None


def _spacy_pairs(
    nlp: Any, instructions: Sequence[str], progress: Callable[[str, int, int], None] | None = None
) -> list[tuple[str | None, str | None]]:
    pairs: list[tuple[str | None, str | None]] = []
    total = len(instructions)
    for k, doc in enumerate(nlp.pipe((text[:1000] for text in instructions), batch_size=256)):
        if progress is not None and k % 256 == 0:
            progress("parsing instructions (spaCy)", k, total)
        sentence = next(iter(doc.sents), None) if doc.has_annotation("SENT_START") else doc
        root = sentence.root if sentence is not None else None
        if root is None or root.pos_ != "VERB":
            pairs.append((None, None))
            continue
        noun = next(
            (c.lemma_.lower() for c in root.children if c.dep_ in ("dobj", "obj") and c.pos_ in ("NOUN", "PROPN")),
            None,
        )
        pairs.append((root.lemma_.lower(), noun))
    if progress is not None:
        progress("parsing instructions (spaCy)", total, total)
    return pairs


def verb_noun_pairs(
    instructions: Sequence[str],
    *,
    method: str = "auto",
    model: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> VerbNoun:
    """Extract the pairs with ``method``: ``spacy`` (ConfigError when unavailable), ``heuristic``, or ``auto``
    (spaCy when it and ``model`` -- or, with no model named, any ``en_core_web_*`` pipeline -- are
    installed, else the heuristic, whose note says why)."""
    if method not in METHODS:
        raise ConfigError(f"unknown parser {method!r}: choose one of {', '.join(METHODS)}")
    chosen, why = choose_parser(method, model)
    if chosen is not None:
        model = chosen
        nlp = _load_spacy(model)
        meta = getattr(nlp, "meta", {}) or {}
        name = f"{meta.get('lang', 'en')}_{meta.get('name', model)}" if meta.get("name") else model
        label = f"spacy:{name} {meta.get('version', '')}".strip()
        note = (
            f"dependency parse by spaCy ({name}): the root verb of the first sentence and the first noun "
            "that is its direct object, both lemmatised"
        )
        return VerbNoun(label, note, _spacy_pairs(nlp, instructions, progress))
    return VerbNoun("heuristic", HEURISTIC_NOTE.format(why=why), [heuristic_pair(text) for text in instructions])
