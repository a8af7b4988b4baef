"""``selfinstruct report``: the numbers on a pool whose right values are known, the page's escaping, and the
command's handling of bad input. The page in a real browser is tested in ``test_report_browser.py``."""

from __future__ import annotations

import importlib.util
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from reportpools import EVIL, SEEDS, TASKS, hostile_pool, known_pool, write_seed_file
from rouge_score import rouge_scorer
from typer.testing import CliRunner

from selfinstruct.cli import app
from selfinstruct.errors import ConfigError, InputError, PoolError
from selfinstruct.pool.directory import Pool
from selfinstruct.views.report import ReportOptions, build_report, histogram, summarize
from selfinstruct.views.reporthtml import CSP, render_html


@pytest.fixture
def known(tmp_path: Path) -> dict[str, Any]:
    pool, seeds = known_pool(tmp_path)
    return build_report(pool, ReportOptions(seeds=str(seeds), parser="heuristic"))


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


# ------------------------------------------------------------------------------------------------ numbers


def test_growth_numbers(known: dict[str, Any]) -> None:
    growth = known["growth"]
    totals = growth["totals"]
    assert totals["runs"] == 2 and totals["accepted"] == 4 and totals["candidates"] == 9
    assert totals["acceptance_rate"] == round(4 / 9, 4)
    assert totals["tokens_per_accepted"] == 250.0  # (300 + 100 + 500 + 100) / 4
    assert totals["seconds_per_accepted"] == 10.0  # (10 + 30) / 4
    assert [r["tokens_per_accepted"] for r in growth["runs"]] == [200.0, 300.0]
    assert [r["acceptance_rate"] for r in growth["runs"]] == [0.5, 0.4]
    # Per round: accepted tasks of the round over accepted + rejected candidates of the round.
    assert growth["acceptance"]["by"] == "round"
    assert growth["acceptance"]["points"] == [
        {"first_round": 1, "last_round": 1, "accepted": 2, "rejected": 2, "unused": 0, "acceptance_rate": 0.5},
        {"first_round": 2, "last_round": 2, "accepted": 2, "rejected": 3, "unused": 0, "acceptance_rate": 0.4},
    ]
    assert growth["rejections"]["ledger"] == {"too_short": 2, "too_similar": 2, "blocked_keyword": 1}
    assert growth["rejections"]["logged"] == {"too_short": 2, "too_similar": 2, "blocked_keyword": 1}
    start = 1767225600.0  # 2026-01-01T00:00:00Z
    assert growth["size_over_time"] == [[start, 1], [start + 1800, 2], [start + 7200, 3], [start + 7200, 4]]


def test_seed_similarity_is_exact_and_differs_from_the_stored_number(known: dict[str, Any]) -> None:
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    expected = [max(scorer.score(t[0], s)["rougeL"].fmeasure for s in SEEDS) for t in TASKS]
    seed_rouge = known["diversity"]["seed_rouge"]
    assert seed_rouge["seeds"] == 3
    assert sum(seed_rouge["histogram"]["counts"]) == 4
    # "Classify the sentiment of the tweet as positive or negative" vs "classify the sentiment of the
    # review": LCS 5 of 10 and 6 tokens, F = 2·5/16.
    assert expected[1] == 0.625
    closest = known["samples"]["closest_to_seed"]
    assert [c["score"] for c in closest] == sorted((round(e, 4) for e in expected), reverse=True)
    assert closest[0]["instruction"] == TASKS[1][0] and closest[0]["seed"] == SEEDS[1]
    assert seed_rouge["summary"]["max"] == round(max(expected), 4)
    assert seed_rouge["summary"]["mean"] == round(sum(expected) / 4, 4)
    bins = [0] * 20
    for value in expected:
        bins[min(int(value * 20), 19)] += 1
    assert seed_rouge["histogram"]["counts"] == bins
    stored = known["diversity"]["stored_max_similarity"]
    assert stored["known"] == 4 and stored["summary"]["max"] == 0.625 and stored["summary"]["min"] == 0.2


def test_diversity_words_and_ngrams(known: dict[str, Any]) -> None:
    diversity = known["diversity"]
    assert diversity["leading_words"]["distinct"] == 4
    assert {w["word"] for w in diversity["leading_words"]["top"]} == {"write", "classify", "summarize", "what"}
    vn = diversity["verb_noun"]
    assert vn["method"] == "heuristic" and "not a parse" in vn["note"]
    assert (vn["instructions"], vn["with_verb"], vn["with_verb_noun"]) == (4, 3, 3)
    assert {(v["verb"], v["nouns"][0]["noun"]) for v in vn["top"]} == {
        ("write", "poem"), ("classify", "sentiment"), ("summarize", "article")
    }  # fmt: skip
    ngrams = diversity["distinct_ngrams"]
    # 31 tokens, 25 distinct ("the" five times, "of" and "in" twice); 27 bigrams, "of the" twice.
    assert ngrams["1"] == {"distinct": 25, "total": 31, "ratio": round(25 / 31, 4)}
    assert ngrams["2"] == {"distinct": 26, "total": 27, "ratio": round(26 / 27, 4)}


def test_shape_numbers(known: dict[str, Any]) -> None:
    shape = known["shape"]
    assert shape["tasks"] == 4 and shape["instances"] == 7
    assert shape["classification"]["count"] == 1 and shape["classification"]["share"] == 0.25
    assert shape["classification"]["answers"] == {"no": 2, "yes": 1, "(none)": 1}
    assert shape["empty_input"] == {"count": 1, "share": 0.25}
    assert shape["instances_per_task"] == {"counts": {"1": 2, "2": 1, "3": 1}, "mean": 1.75}
    assert shape["labels"]["distinct"] == 2 and shape["labels"]["total"] == 3
    assert shape["labels"]["top"] == [{"label": "Positive", "count": 2}, {"label": "Negative", "count": 1}]
    assert shape["labels"]["majority_share"] == round(2 / 3, 4)
    lengths = shape["lengths"]
    assert lengths["instruction"]["summary"]["count"] == 4 and lengths["instruction"]["summary"]["max"] == 10
    assert lengths["input"]["summary"]["count"] == 6  # non-empty inputs only, as in the paper
    assert lengths["output"]["summary"]["count"] == 7 and lengths["output"]["summary"]["max"] == 5
    assert sum(lengths["output"]["histogram"]["counts"]) == 7


def test_samples(known: dict[str, Any]) -> None:
    samples = known["samples"]
    assert len(samples["random"]) == 4  # fewer tasks than the sample size: all of them
    rejects = {g["reason"]: g for g in samples["rejects"]}
    assert [g["reason"] for g in samples["rejects"]] == ["too_short", "too_similar", "blocked_keyword"]
    similar = rejects["too_similar"]["examples"]
    assert similar[0]["times"] == 2 and similar[0]["score"] == 1.0  # the same text twice, up to case and spaces
    assert similar[0]["most_similar"] == SEEDS[0]
    assert rejects["blocked_keyword"]["examples"][0]["keyword"] == "map"


def test_histogram_and_summary_edges() -> None:
    assert histogram([0.0, 0.05, 1.0], [0.0, 0.05, 0.1, 1.0])["counts"] == [1, 1, 1]
    assert histogram([3, 500], [0, 10, 20], overflow=True)["counts"] == [1, 1]
    assert summarize([])["count"] == 0
    assert summarize([1, 2, 3])["median"] == 2.0


def test_a_pool_without_tasks_or_rejected_file(tmp_path: Path) -> None:
    pool = Pool(tmp_path / "p")
    with pool.lock():
        pool.append_run({"run_id": "r", "accepted": 0, "candidates": 7, "rejected": {"too_short": 7}})
    report = build_report(pool.directory, ReportOptions(seeds=str(write_seed_file(tmp_path / "s.jsonl"))))
    assert report["pool"]["tasks"] == 0
    assert report["growth"]["acceptance"] == {
        "by": "run",
        "points": [{"run_id": "r", "accepted": 0, "rejected": 7, "unused": 0, "candidates": 7, "acceptance_rate": 0.0}],
    }  # fmt: skip
    assert report["growth"]["totals"]["tokens_per_accepted"] is None
    page = render_html([report])
    assert "no data" in page and "No rejected candidates recorded" in page


def test_against_puts_both_pools_on_the_page(tmp_path: Path, known: dict[str, Any]) -> None:
    other, seeds = hostile_pool(tmp_path)
    second = build_report(other, ReportOptions(seeds=str(seeds)))
    page = render_html([known, second])
    assert "pool vs hostile" in page
    assert page.count('data-chart="sunburst"') == 2


# ------------------------------------------------------------------------------------------------ the page


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [name for name, _ in attrs]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_every_pool_string_is_escaped(tmp_path: Path) -> None:
    pool, seeds = hostile_pool(tmp_path)
    page = render_html([build_report(pool, ReportOptions(seeds=str(seeds), parser="heuristic"))])
    parsed = _Tags()
    parsed.feed(page)
    assert "script" not in parsed.tags and "img" not in parsed.tags
    assert not [a for a in parsed.attrs if a.startswith("on")]
    assert parsed.tags.count("svg") == page.count("<svg")  # no svg from pool text
    text = "".join(parsed.text)
    assert EVIL in text  # shown, as text: instruction, input, output, label, reason, run id
    assert text.count(EVIL) >= 6
    assert f'content="{CSP}"' in page and "default-src 'none'" in CSP


# ------------------------------------------------------------------------------------------------ the command


def test_cli_writes_html_and_json(tmp_path: Path) -> None:
    pool, seeds = known_pool(tmp_path)
    result = run_cli("report", str(pool), "--seeds", str(seeds), "--parser", "heuristic")
    assert result.exit_code == 0, result.output
    page = pool / "report.html"
    assert page.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert page.stat().st_mode & 0o044  # readable by others, unlike a temporary file
    result = run_cli("report", str(pool), "--seeds", str(seeds), "--json", "--parser", "heuristic")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["schema"] == "selfinstruct-report/2" and data["shape"]["tasks"] == 4
    out = tmp_path / "both.html"
    result = run_cli("report", str(pool), "--against", str(pool), "--seeds", str(seeds), "--json", "--out", str(out))
    assert result.exit_code == 0
    both = json.loads(result.stdout)
    assert both["pool"]["shape"] == both["against"]["shape"] and out.is_file()


def test_seeds_default_to_the_file_the_pool_was_grown_from(tmp_path: Path) -> None:
    pool_dir, seeds = known_pool(tmp_path)
    pool = Pool(pool_dir)
    with pool.lock():
        pool.write_config({"model": "m", "seeds_hash": "0" * 16, "config": {"seeds": str(seeds)}})
    report = build_report(pool_dir)
    assert report["pool"]["seeds_path"] == str(seeds) and report["pool"]["seeds"] == 3
    assert any("has changed" in w for w in report["warnings"])


@pytest.mark.parametrize(
    ("setup", "args", "code", "message"),
    [
        ("missing", [], 4, "no such pool directory"),
        ("empty", [], 4, "not a pool"),
        ("corrupt", [], 4, "tasks.jsonl:2: not valid JSON"),
        ("ok", ["--seeds", "{tmp}/nope.jsonl"], 2, "nope.jsonl: file not found"),
        ("ok", ["--parser", "grammar"], 2, "unknown parser 'grammar'"),
        ("ok", ["--sample", "-1"], 2, "--sample must be at least 0"),
        ("ok", ["--out", "{tmp}/seeds.jsonl/x.html"], 73, "Not a directory"),
        ("ok", ["--against", "{tmp}/elsewhere"], 4, "no such pool directory"),
    ],
)
def test_bad_input_gets_a_message_and_an_exit_code(
    tmp_path: Path, setup: str, args: list[str], code: int, message: str
) -> None:
    pool, seeds = known_pool(tmp_path)
    if setup == "missing":
        pool = tmp_path / "absent"
    elif setup == "empty":
        pool = tmp_path / "empty"
        pool.mkdir()
    elif setup == "corrupt":
        lines = (pool / "tasks.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
        lines[1] = "{not json\n"
        (pool / "tasks.jsonl").write_text("".join(lines), encoding="utf-8")
    extra = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--seeds" not in extra:
        extra += ["--seeds", str(seeds)]
    result = run_cli("report", str(pool), *extra)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_a_torn_last_line_is_skipped_with_a_warning(tmp_path: Path) -> None:
    pool, seeds = known_pool(tmp_path)
    with (pool / "tasks.jsonl").open("a", encoding="utf-8") as fh:
        fh.write('{"id": "machine_task_000009", "instr')
    report = build_report(pool, ReportOptions(seeds=str(seeds)))
    assert report["pool"]["tasks"] == 4
    assert any("incomplete last line" in w for w in report["warnings"])


def test_optional_parts_say_how_to_install_them(tmp_path: Path) -> None:
    pool, seeds = known_pool(tmp_path)
    if importlib.util.find_spec("spacy") is None:
        with pytest.raises(ConfigError, match=r"selfinstruct\[parse\]"):
            build_report(pool, ReportOptions(seeds=str(seeds), parser="spacy"))
    if importlib.util.find_spec("sentence_transformers") is None:
        with pytest.raises(ConfigError, match="pip install torch first"):
            build_report(pool, ReportOptions(seeds=str(seeds), embeddings=True))


def test_library_errors_are_typed(tmp_path: Path) -> None:
    with pytest.raises(PoolError):
        build_report(tmp_path / "none")
    pool, _ = known_pool(tmp_path)
    (tmp_path / "bad.jsonl").write_text("[1, 2", encoding="utf-8")
    with pytest.raises(InputError, match="the seed file the report compares with"):
        build_report(pool, ReportOptions(seeds=str(tmp_path / "bad.jsonl")))


@pytest.mark.parametrize("direct_vocab", [55_000, 1])  # 1: the dense-rank path of big vocabularies
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_distinct_ngrams_match_a_set_count(seed: int, direct_vocab: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import random

    from selfinstruct.views import report
    from selfinstruct.views.report import _ngrams

    monkeypatch.setattr(report, "_DIRECT_VOCAB", direct_vocab)
    rng = random.Random(seed)
    tokens = [[rng.choice(["a", "b", "c", "d", "e"]) for _ in range(rng.randint(0, 9))] for _ in range(200)] + [[]]
    got = _ngrams(tokens)
    for n in (1, 2, 3, 4):
        grams = [tuple(t[i : i + n]) for t in tokens for i in range(len(t) - n + 1)]
        assert (got[str(n)]["distinct"], got[str(n)]["total"]) == (len(set(grams)), len(grams))
    assert _ngrams([])["1"] == {"distinct": 0, "total": 0, "ratio": 0.0}


# ------------------------------------------------------------------------------------------------ issue 18


def test_surplus_and_unfinished_are_never_rejections(tmp_path: Path) -> None:
    from reportpools import synthetic_pool

    pool = synthetic_pool(tmp_path, 300)
    runs = [json.loads(x) for x in (pool / "runs.jsonl").read_text().splitlines()]
    report = build_report(pool, ReportOptions(parser="heuristic"))
    growth = report["growth"]
    accepted = sum(r["accepted"] for r in runs)
    rejected = sum(sum(r["rejected"].values()) for r in runs)
    assert growth["totals"]["acceptance_rate"] == round(accepted / (accepted + rejected), 4)
    assert growth["totals"]["unused"] == sum(sum(r["surplus"].values()) for r in runs)
    assert "surplus" not in growth["rejections"]["logged"] and "unfinished" not in growth["rejections"]["ledger"]
    rounds = [p["first_round"] for p in growth["acceptance"]["points"]]
    assert rounds == list(range(1, 31))  # the ledger's 30 rounds; the late rounds 31, 32 are left out
    assert all(p["acceptance_rate"] is not None and p["acceptance_rate"] > 0 for p in growth["acceptance"]["points"])


@pytest.mark.parametrize(
    ("value", "bin_"), [(0.3, 6), (0.29999999999999993, 6), (0.30000000000000004, 6), (0.15, 3), (1.0, 19), (0.0, 0)]
)
def test_a_score_on_a_bin_edge_lands_in_the_bin_it_starts(value: float, bin_: int) -> None:
    counts = histogram([value], [i / 20 for i in range(21)])["counts"]
    assert counts.index(1) == bin_


def test_rating_sheet_round_trips(tmp_path: Path) -> None:
    from reportpools import synthetic_pool

    from selfinstruct.views.rating import draw_sheet, read_ratings, sheet_csv, sheet_jsonl

    pool = synthetic_pool(tmp_path, 300)
    tasks = Pool(pool).read_tasks()
    rows = draw_sheet(tasks, 40, seed=3)
    assert len(rows) == 40 and rows == draw_sheet(tasks, 40, seed=3)
    # The pool streamed (as `report --rating-sheet` reads it: twice, holding the drawn tasks only): the same.
    assert rows == draw_sheet(lambda: Pool(pool).iter_tasks(strict=True), 40, seed=3)
    assert len(draw_sheet(lambda: Pool(pool).iter_tasks(strict=True), 1000, seed=3)) == 300
    assert all(1 <= r["rate_instance"] <= len(r["instances"]) for r in rows)
    answers = [(i % 5 != 0, i % 3 != 0, i % 2 == 0) for i in range(40)]
    for r, (a, b, c) in zip(rows, answers, strict=True):
        r["answers"] = {"instruction": a, "input": b, "output": c}
    (tmp_path / "filled.jsonl").write_text(sheet_jsonl(rows), encoding="utf-8")
    (tmp_path / "filled.csv").write_text(sheet_csv(rows), encoding="utf-8")
    ids = {t.id for t in tasks}
    for name in ("filled.jsonl", "filled.csv"):
        got = read_ratings(tmp_path / name, ids)
        assert got["tasks"] == 40
        assert got["instruction"]["yes"] == sum(a for a, _, _ in answers)
        assert got["output"]["yes"] == 20
        assert got["all"]["yes"] == sum(a and b and c for a, b, c in answers)
        assert got["all"]["low"] < got["all"]["share"] < got["all"]["high"]
    report = build_report(pool, ReportOptions(parser="heuristic", ratings=str(tmp_path / "filled.csv")))
    page = render_html([report])
    assert "people: <code>" in page and f"({report['quality']['ratings']['all']['yes']}/40)" in page
    (tmp_path / "bad.csv").write_text("task_id,valid_instruction,valid_input,valid_output\nx,perhaps,,\n")
    with pytest.raises(InputError, match=r"bad.csv:2: field 'valid_instruction': 'perhaps'"):
        read_ratings(tmp_path / "bad.csv")


def test_cli_rating_sheet_and_parquet(tmp_path: Path) -> None:
    from reportpools import synthetic_pool

    pool = synthetic_pool(tmp_path, 300)
    args = ["report", str(pool), "--parser", "heuristic", "--rating-sheet", "25"]
    if importlib.util.find_spec("pyarrow") is not None:
        args += ["--parquet", str(tmp_path / "rows.parquet")]
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    lines = (pool / "rating_sheet.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 25 and (pool / "rating_sheet.csv").read_text().count("\n") >= 26
    if importlib.util.find_spec("pyarrow") is not None:
        import pyarrow.parquet as pq

        table = pq.read_table(tmp_path / "rows.parquet")
        assert table.num_rows == 300
        assert {"seed_rouge_l", "nearest_seed", "verb", "noun", "judge_score", "instruction_words"} <= set(
            table.column_names
        )


class _TwinEncoder:
    """Bag-of-words vectors: a task and its near-verbatim twin come out almost the same."""

    def encode(self, texts: list[str], **_: Any) -> Any:
        import numpy as np

        out = np.zeros((len(texts), 64))
        for k, text in enumerate(texts):
            for word in text.lower().split():
                out[k, hash(word.strip(".!")) % 64] += 1.0
        return out


def test_embedding_neighbours_are_searched_over_the_whole_pool() -> None:
    from selfinstruct.views.embeddings import embedding_diversity

    base = [f"Topic {i} alpha{i} beta{i} gamma{i} delta{i}." for i in range(600)]
    texts = base + [t.replace(".", "!") for t in base]  # every task has a near-verbatim twin
    got = embedding_diversity(texts, limit=100, seed=0, encoder=_TwinEncoder())
    assert got["sampled"] and got["queries"] == 100 and got["instructions"] == 1200
    assert got["nearest_neighbour"]["share_below_0_1"] >= 0.99


def test_parser_auto_decides_without_importing_spacy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from selfinstruct.views.verbnoun import choose_parser

    for name in ("spacy", "en_core_web_md", "en_core_web_lg"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert choose_parser("auto", None) == ("en_core_web_md", "")
    assert choose_parser("auto", "en_core_web_lg") == ("en_core_web_lg", "")
    chosen, why = choose_parser("auto", "en_core_web_sm")
    assert chosen is None and "en_core_web_sm is not" in why
    imported = sys.modules.get("spacy")
    assert imported is None or not str(getattr(imported, "__file__", "")).startswith(str(tmp_path))


# ------------------------------------------------------------------------------------------------ issue 19


@pytest.mark.parametrize("max_tasks", [50, 299])
def test_a_pool_above_the_bound_is_sampled_and_its_counts_stay_exact(tmp_path: Path, max_tasks: int) -> None:
    from reportpools import synthetic_pool

    from selfinstruct.views.report import measure_pool

    pool = synthetic_pool(tmp_path, 300)
    full = measure_pool(pool, ReportOptions(parser="heuristic"))
    part = measure_pool(pool, ReportOptions(parser="heuristic", max_tasks=max_tasks))
    exact, sampled = full.report, part.report
    assert "sampled" not in exact and not any("sample of" in w for w in exact["warnings"])
    assert sampled["sampled"]["tasks"] == max_tasks and sampled["sampled"]["of"] == 300
    assert any(f"sample of {max_tasks:,} of its 300 tasks" in w for w in sampled["warnings"])
    # Counts over every task, not the sample:
    assert sampled["pool"]["tasks"] == 300
    assert sampled["shape"] == exact["shape"]
    assert sampled["diversity"]["leading_words"] == exact["diversity"]["leading_words"]
    assert sampled["diversity"]["stored_max_similarity"] == exact["diversity"]["stored_max_similarity"]
    assert sampled["quality"]["table1"] == exact["quality"]["table1"]
    assert sampled["growth"] == exact["growth"]
    # Statistics on the sample: that many rows, the same tasks for the same seed, other tasks for another.
    assert len(part.rows["id"]) == max_tasks and set(part.rows["id"]) < set(full.rows["id"])
    assert part.rows["id"] == sorted(part.rows["id"])  # in file order
    again = measure_pool(pool, ReportOptions(parser="heuristic", max_tasks=max_tasks))
    assert again.rows["id"] == part.rows["id"]
    other = measure_pool(pool, ReportOptions(parser="heuristic", max_tasks=max_tasks, seed=7))
    assert other.rows["id"] != part.rows["id"]
    assert sampled["diversity"]["seed_rouge"]["summary"]["count"] == max_tasks
    assert "sample of" in render_html([sampled])


def test_a_pool_at_the_bound_is_measured_whole(tmp_path: Path) -> None:
    from reportpools import synthetic_pool

    pool = synthetic_pool(tmp_path, 120)
    at = build_report(pool, ReportOptions(parser="heuristic", max_tasks=120))
    whole = build_report(pool, ReportOptions(parser="heuristic"))
    assert "sampled" not in at
    for report in (at, whole):
        report.pop("generated_at"), report.pop("timings")
    assert at == whole


def test_against_a_sampled_pool_compares_whole_counts_and_a_subsample_of_the_whole(tmp_path: Path) -> None:
    from reportpools import synthetic_pool

    from selfinstruct.views.report import build_reports

    big, small = synthetic_pool(tmp_path, 300, name="big"), synthetic_pool(tmp_path, 100, name="small", seed=1)
    exact = build_reports([big, small], ReportOptions(parser="heuristic"))
    part = build_reports([big, small], ReportOptions(parser="heuristic", max_tasks=150))
    assert "sampled" in part[0].report and "sampled" not in part[1].report
    matched = part[0].report["comparison"]["distinct_ngrams_matched"]
    assert matched["sampled"] and (matched["tasks"], matched["of"]) == (100, 300)
    for k in (0, 1):  # word and label counts over every task of both pools, sampled or not
        for key in ("leading_words", "labels", "label_total"):
            assert part[k].report["comparison"][key] == exact[k].report["comparison"][key]
