"""The HTML page of ``selfinstruct report``: one self-contained file drawn from one or two report dicts.

The page loads nothing: styles are inline, plots are inline SVG (:mod:`selfinstruct.views.svg`), there is no
script, and a Content-Security-Policy of ``default-src 'none'`` tells the browser to refuse any request
should a future edit add one. Every string that comes from a pool (instructions, inputs, outputs, labels,
reasons, run ids, paths) is HTML-escaped: pool text is model output, and a task holding ``</script>`` or
``<img onerror=...>`` must show as text. With two reports (``--against``) each figure shows both pools,
histograms as shares of each pool so that pools of different sizes compare.

Scope: layout only; every number comes from :func:`selfinstruct.views.report.build_report`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from html import escape
from typing import Any

from selfinstruct.views import svg
from selfinstruct.views.svg import PALETTE, Series

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"

STYLE = """
:root { color-scheme: light; }
body { margin: 0; background: #fff; color: #222; font: 14px/1.45 "Charter", "Georgia", "DejaVu Serif", serif; }
main { max-width: 1000px; margin: 0 auto; padding: 28px 32px 48px; }
h1 { font-size: 24px; margin: 0 0 2px; font-weight: 600; }
h2 { font-size: 18px; margin: 34px 0 8px; padding-bottom: 3px; border-bottom: 1px solid #ccc; font-weight: 600; }
.sub { color: #555; margin: 0 0 14px; font-size: 13px; }
.sub code, td code { font: 12px "DejaVu Sans Mono", monospace; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 18px 26px; }
.grid.one { grid-template-columns: 1fr; }
figure { margin: 8px 0 6px; }
figure svg { width: 100%; height: auto; display: block; font-family: "DejaVu Sans", "Helvetica", sans-serif; }
figcaption { font-size: 12.5px; color: #333; margin-top: 4px; }
figcaption b, caption b { font-weight: 600; }
table { border-collapse: collapse; width: 100%; font-size: 12.5px; margin: 6px 0 4px;
        border-top: 1.5px solid #222; border-bottom: 1.5px solid #222; }
caption { caption-side: top; text-align: left; font-size: 12.5px; padding: 0 0 5px; }
th { text-align: left; font-weight: 600; border-bottom: 1px solid #222; padding: 3px 8px 3px 0; }
td { padding: 2.5px 8px 2.5px 0; vertical-align: top; border-top: 1px solid #eee; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.text { max-width: 420px; overflow-wrap: anywhere; white-space: pre-wrap; }
td.nowrap { white-space: nowrap; }
.note { font-size: 12.5px; color: #444; background: #f6f6f3; border-left: 3px solid #bbb;
        padding: 6px 10px; margin: 8px 0; }
.warn { border-left-color: #c9a227; background: #fbf7e8; }
.key { display: inline-block; width: 10px; height: 10px; margin-right: 4px; vertical-align: -1px; }
details { font-size: 12.5px; margin: 2px 0; }
details summary { cursor: pointer; color: #1a4f8a; }
details ul { margin: 3px 0 6px; padding-left: 18px; }
details.examples > details { margin-left: 10px; }
.detail { color: #555; }
ol.inst { margin: 0; padding-left: 18px; }
a { color: #1a4f8a; }
footer { margin-top: 36px; font-size: 12px; color: #666; border-top: 1px solid #ddd; padding-top: 8px; }
@media (max-width: 760px) { .grid { grid-template-columns: 1fr; } }
@media print { main { max-width: none; padding: 0; } h2 { break-after: avoid; } figure, table { break-inside: avoid; } }
"""


#: The most characters of one piece of pool text on the page: a pool whose fields hold megabytes (model
#: garbage, a hostile file) gives a page of a few MB, not of three copies of each field.
MAX_FIELD_CHARS = 2_000
#: A label, a reason or a keyword: short by nature.
MAX_LABEL_CHARS = 80


def _clip(text: object, limit: int = MAX_FIELD_CHARS) -> str:
    """``str(text)``, cut to ``limit`` characters with an ellipsis and the count of what was left out.

    >>> _clip("abcdef", 4)
    'abc… (+3 characters)'
    """
    s = str(text)
    return s if len(s) <= limit else f"{s[: limit - 1]}… (+{len(s) - limit + 1:,} characters)"


def _e(text: object, limit: int = MAX_FIELD_CHARS) -> str:
    return escape(_clip(text, limit), quote=True)


def _int(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else "–"


def _pct(x: Any) -> str:
    return f"{x * 100:.1f}%" if isinstance(x, (int, float)) else "–"


def _num(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:,.{digits}f}" if isinstance(x, float) else _e(x)


class _Page:
    """Numbers figures and tables as they are added."""

    def __init__(self, reports: Sequence[dict[str, Any]]) -> None:
        self.reports = reports
        self.names = [r["pool"]["name"] for r in reports]
        if len(set(self.names)) < len(self.names):
            self.names = [r["pool"]["directory"] for r in reports]
        self.colors = [PALETTE[0], PALETTE[1]]
        self.figures = 0
        self.tables = 0
        self.out: list[str] = []

    @property
    def compare(self) -> bool:
        return len(self.reports) > 1

    def figure(self, chart: str, caption: str) -> str:
        self.figures += 1
        return f"<figure>{chart}<figcaption><b>Figure {self.figures}.</b> {caption}</figcaption></figure>"

    def table(
        self, caption: str, head: Sequence[str], rows: Sequence[Sequence[str]], kinds: Sequence[bool | str]
    ) -> str:
        """A numbered table; ``kinds`` per column: True numeric, False wrapping text, or a CSS class."""
        self.tables += 1
        classes = ["n" if k is True else "text" if k is False else str(k) for k in kinds]
        cells = "".join(f'<th class="{"n" if c == "n" else ""}">{h}</th>' for h, c in zip(head, classes, strict=True))
        body = "".join(
            "<tr>" + "".join(f'<td class="{c}">{v}</td>' for v, c in zip(r, classes, strict=True)) + "</tr>"
            for r in rows
        )
        return f"<table><caption><b>Table {self.tables}.</b> {caption}</caption><tr>{cells}</tr>{body}</table>"

    def series(self, values: Callable[[dict[str, Any]], Sequence[float]]) -> list[Series]:
        return [Series(n, values(r), c) for n, r, c in zip(self.names, self.reports, self.colors, strict=False)]

    def key(self) -> str:
        """Inline colour keys naming the pools, for captions."""
        if not self.compare:
            return ""
        return (
            " ".join(
                f'<span class="key" style="background:{c}"></span>{_e(n)}'
                for n, c in zip(self.names, self.colors, strict=False)
            )
            + "."
        )


def _shares(counts: Sequence[int]) -> list[float]:
    total = sum(counts)
    return [c / total if total else 0.0 for c in counts]


def _hist_series(page: _Page, get: Callable[[dict[str, Any]], dict[str, Any]]) -> tuple[list[Series], bool]:
    """Histogram series of every pool: counts for one pool, shares of each pool when comparing."""
    as_share = page.compare
    return page.series(lambda r: _shares(get(r)["counts"]) if as_share else get(r)["counts"]), as_share


def _time_unit(span: float) -> tuple[str, float]:
    """The unit for a time axis spanning ``span`` seconds, and its length in seconds."""
    for unit, seconds, up_to in (("seconds", 1.0, 120), ("minutes", 60.0, 7200), ("hours", 3600.0, 3 * 86400)):
        if span < up_to:
            return unit, seconds
    return "days", 86400.0


# ------------------------------------------------------------------------------------------------ sections


def _examples(label: str, items: Sequence[dict[str, Any]], *, anchor: str = "") -> str:
    """A closed ``<details>`` list of example tasks (id, instruction, detail)."""
    if not items:
        return ""
    lis = "".join(
        f"<li><code>{_e(x['id'])}</code> {_e(x['instruction'])}"
        + (f' <span class="detail">({_e(x["detail"])})</span>' if x.get("detail") else "")
        + "</li>"
        for x in items
    )
    ident = f' id="{_e(anchor)}"' if anchor else ""
    return f"<details{ident}><summary>{label} ({len(items)})</summary><ul>{lis}</ul></details>"


def _bin_examples(title: str, labels: Sequence[str], bins: Sequence[Sequence[dict[str, Any]]], prefix: str) -> str:
    """Example tasks behind each bar of a histogram, one ``<details>`` per non-empty bin."""
    inner = "".join(
        _examples(_e(label), items, anchor=f"{prefix}-{i}")
        for i, (label, items) in enumerate(zip(labels, bins, strict=False))
        if items
    )
    return f'<details class="examples"><summary>{title}</summary>{inner}</details>' if inner else ""


def _bin_labels(edges: Sequence[float], overflow: bool, fmt: Callable[[float], str]) -> list[str]:
    labels = [f"{fmt(a)}–{fmt(b)}" for a, b in itertools.pairwise(edges)]
    if overflow and labels:
        labels[-1] = f"{fmt(edges[-2])}+"
    return labels


def _header(page: _Page) -> str:
    r0 = page.reports[0]
    title = " vs ".join(page.names)
    lines = []
    for name, r, color in zip(page.names, page.reports, page.colors, strict=False):
        p = r["pool"]
        key = f'<span class="key" style="background:{color}"></span>' if page.compare else ""
        model = f", model <code>{_e(p['model'])}</code>" if p.get("model") else ""
        target = f" of target {_int(p['target'])}" if p.get("target") else ""
        lines.append(
            f"{key}<b>{_e(name)}</b>: <code>{_e(p['directory'])}</code>, {_int(p['tasks'])} machine tasks{target}"
            f"{model}; seeds <code>{_e(p['seeds_path'])}</code> ({_int(p['seeds'])} tasks)"
        )
    when = r0.get("generated_at", "")
    warnings = [w for r in page.reports for w in r.get("warnings", [])]
    warn = "".join(f'<div class="note warn">{_e(w)}</div>' for w in warnings)
    nav = (
        '<p class="sub">Sections: <a href="#growth">growth</a> · <a href="#diversity">diversity</a> · '
        '<a href="#shape">shape</a> · <a href="#quality">quality</a> · <a href="#samples">samples</a></p>'
    )
    return (
        f"<h1>Self-Instruct pool report: {_e(title)}</h1>"
        f'<p class="sub">{"<br>".join(lines)}<br>generated {_e(when)}</p>{nav}{warn}'
    )


def _summary(page: _Page) -> str:
    def row(label: str, get: Callable[[dict[str, Any]], str]) -> list[str]:
        return [label, *(get(r) for r in page.reports)]

    rows = [
        row("machine tasks", lambda r: _int(r["pool"]["tasks"])),
        row("instances", lambda r: _int(r["shape"]["instances"])),
        row(
            "runs / rounds",
            lambda r: f"{_int(r['growth']['totals']['runs'])} / {_int(r['growth']['totals']['rounds'])}",
        ),
        row(
            "acceptance: accepted / (accepted + rejected)",
            lambda r: (
                f"{_pct(r['growth']['totals']['acceptance_rate'])} ({_int(r['growth']['totals']['accepted'])} / "
                f"{_int(r['growth']['totals']['accepted'] + r['growth']['totals']['rejected'])})"
            ),
        ),
        row("unused candidates (surplus, unfinished)", lambda r: _int(r["growth"]["totals"]["unused"])),
        row("tokens per accepted task", lambda r: _num(r["growth"]["totals"]["tokens_per_accepted"], 0)),
        row("seconds per accepted task", lambda r: _num(r["growth"]["totals"]["seconds_per_accepted"], 2)),
        row(
            "ROUGE-L to nearest seed: mean / median",
            lambda r: (
                f"{_num(r['diversity']['seed_rouge']['summary']['mean'])} / "
                f"{_num(r['diversity']['seed_rouge']['summary']['median'])}"
            ),
        ),
        row("  share above 0.5", lambda r: _pct(r["diversity"]["seed_rouge"]["share_above_0_5"])),
        row("distinct verb–noun pairs", lambda r: _int(r["diversity"]["verb_noun"]["distinct_pairs"])),
        row("distinct leading words", lambda r: _int(r["diversity"]["leading_words"]["distinct"])),
        row("distinct-2 (bigrams)", lambda r: _num(r["diversity"]["distinct_ngrams"]["2"]["ratio"])),
        row("classification tasks", lambda r: _pct(r["shape"]["classification"]["share"])),
        row("tasks with no input", lambda r: _pct(r["shape"]["empty_input"]["share"])),
        row("instances per task (mean)", lambda r: _num(r["shape"]["instances_per_task"]["mean"], 2)),
    ]
    if any((r.get("quality") or {}).get("judge") for r in page.reports):
        rows.append(
            row(
                "judge: scored tasks / mean score",
                lambda r: (
                    f"{_int(r['quality']['judge']['scored'])} / {_num(r['quality']['judge']['mean'], 2)}"
                    if (r.get("quality") or {}).get("judge")
                    else "–"
                ),
            )
        )
    if any(r.get("embeddings") for r in page.reports):
        rows.append(
            row(
                "embedding: mean pairwise cosine distance",
                lambda r: _num((r.get("embeddings") or {}).get("mean_pairwise_distance")),
            )
        )
    head = ["", *(_e(n) for n in page.names)]
    return page.table(
        "Summary.",
        head,
        [[_e(c) if i == 0 else c for i, c in enumerate(rw)] for rw in rows],
        [False, *([True] * len(page.reports))],
    )


RUN_COLUMNS = ["run", "started", "exit", "rounds", "accepted", "rejected", "unused", "accept", "tokens/task",
               "s/task", "s"]  # fmt: skip
MAX_RUN_MARKERS = 20  # run-start lines: drawn for 2 to this many runs (one is no news, 52 are clutter)


def _growth(page: _Page) -> str:
    parts = ['<h2 id="growth">1 Growth</h2>', '<div class="grid">']
    size_series = []
    markers: list[float] = []
    spans = [r["growth"]["size_over_time"][-1][0] - r["growth"]["size_over_time"][0][0]
             for r in page.reports if r["growth"]["size_over_time"]]  # fmt: skip
    unit, seconds = _time_unit(max(spans, default=0.0))
    runs_count = 0
    for name, r, color in zip(page.names, page.reports, page.colors, strict=False):
        points = r["growth"]["size_over_time"]
        t0 = points[0][0] if points else 0.0
        size_series.append(Series(name, [], color, [((t - t0) / seconds, n) for t, n in points]))
        runs_count = len(r["growth"]["runs"])
        if not page.compare and points and 2 <= runs_count <= MAX_RUN_MARKERS:
            markers = [(run["started"] - t0) / seconds for run in r["growth"]["runs"] if run.get("started") is not None]
    if markers:
        how = f"; dashed lines mark the start of each of the {runs_count} runs in <code>runs.jsonl</code>."
    elif not page.compare and runs_count > MAX_RUN_MARKERS:
        how = f" ({_int(runs_count)} runs; their starts are in the runs table below)."
    else:
        how = "."
    caption = f"Pool size over time ({unit} since the first accepted task){how} {page.key()}"
    chart = svg.line_chart(
        size_series,
        title="Pool size over time",
        x_label=f"{unit} since the first task",
        y_label="machine tasks",
        x_format=lambda h: f"{h:g}",
        markers=markers,
    )
    parts.append(page.figure(chart, caption))

    by = {r["growth"]["acceptance"]["by"] for r in page.reports}
    acc_series = []
    for name, r, color in zip(page.names, page.reports, page.colors, strict=False):
        pts = r["growth"]["acceptance"]["points"]
        if r["growth"]["acceptance"]["by"] == "round":
            xy = [((p["first_round"] + p["last_round"]) / 2, p["acceptance_rate"]) for p in pts]
        else:
            xy = [(i + 1, p["acceptance_rate"]) for i, p in enumerate(pts)]
        acc_series.append(Series(name, [], color, [(x, y) for x, y in xy if y is not None]))
    x_label = "round" if by == {"round"} else "run (in ledger order)"
    grouped = any(
        p.get("first_round") != p.get("last_round") for r in page.reports for p in r["growth"]["acceptance"]["points"]
    )
    chart = svg.line_chart(
        acc_series,
        title="Acceptance rate",
        x_label=x_label,
        y_label="accepted / (accepted + rejected)",
        y_format=svg.percent,
        y_range=(0.0, 1.0),
        integer_x=True,
    )
    notes = []
    for name, r in zip(page.names, page.reports, strict=False):
        acc = r["growth"]["acceptance"]
        unused = sum(p.get("unused", 0) for p in acc["points"])
        of = f" of {_e(name)}" if page.compare else ""
        if acc["by"] == "round" and acc.get("rounds_from") == "ledger":
            out = acc.get("outside", {})
            notes.append(
                f"Rounds{of} are those the runs of <code>runs.jsonl</code> closed"
                + (
                    f"; {_int(out['rounds'])} later round(s) of candidates still in flight when a run stopped are "
                    f"left out ({_int(out['accepted'])} accepted, {_int(out['rejected'])} rejected)"
                    if out.get("rounds")
                    else ""
                )
                + "."
            )
        if unused:
            notes.append(
                f"{_int(unused)} candidates{of} of these rounds were surplus or unfinished (finished beyond the "
                "target, or cancelled at the stop): never judged, so not counted."
            )
    how = (
        "accepted tasks over accepted plus rejected candidates of each round"
        + (" (rounds grouped into equal runs of rounds)" if grouped else "")
        if by == {"round"}
        else "accepted over accepted plus rejected candidates per run, from the ledger (no "
        "<code>rejected.jsonl</code> was kept)"
    )
    parts.append(
        page.figure(
            chart,
            f"Acceptance rate: {how}. A line falling over many rounds is saturation. {' '.join(notes)} {page.key()}",
        )
    )

    reasons: list[str] = []
    for r in page.reports:
        counts = r["growth"]["rejections"]["ledger"] or r["growth"]["rejections"]["logged"]
        reasons += [k for k in counts if k not in reasons]
    series = page.series(
        lambda r: [
            (r["growth"]["rejections"]["ledger"] or r["growth"]["rejections"]["logged"]).get(k, 0) for k in reasons
        ]
    )
    if page.compare:
        series = [Series(s.name, _shares([int(v) for v in s.values]), s.color) for s in series]
    chart = svg.bar_chart(
        [_clip(k, MAX_LABEL_CHARS) for k in reasons],
        series,
        title="Rejections by reason",
        value_format=svg.share if page.compare else svg.count,
    )
    unused_note = "; ".join(
        f"{_e(n)}: " * page.compare
        + ", ".join(f"{_e(k)} {_int(v)}" for k, v in (r["growth"]["rejections"]["unused_ledger"]
                                                      or r["growth"]["rejections"]["unused_logged"]).items())
        for n, r in zip(page.names, page.reports, strict=False)
        if r["growth"]["rejections"]["unused_ledger"] or r["growth"]["rejections"]["unused_logged"]
    )  # fmt: skip
    parts.append(
        page.figure(
            chart,
            "Rejected candidates by reason, summed over the runs of the ledger"
            + (" (share of each pool's rejections)" if page.compare else "")
            + '. Examples of each reason: <a href="#rejects">rejected candidates</a>.'
            + (f" Not rejections, and not counted here: {unused_note}." if unused_note else "")
            + f" {page.key()}",
        )
    )
    parts.append("</div>")

    for name, r in zip(page.names, page.reports, strict=False):
        runs = r["growth"]["runs"][-15:]
        if not runs:
            parts.append(f'<div class="note">{_e(name)}: no run recorded in <code>runs.jsonl</code>.</div>')
            continue
        rows = [
            [
                f"<code>{_e(x['run_id'])}</code>",
                _e(x.get("started_at") or "–"),
                _e(x.get("exit_reason") or "–"),
                _int(x["rounds"]),
                _int(x["accepted"]),
                _int(x["rejected"]),
                _int(x["unused"]),
                _pct(x["acceptance_rate"]),
                _num(x["tokens_per_accepted"], 0),
                _num(x["seconds_per_accepted"], 2),
                _num(x["seconds"], 0),
            ]
            for x in runs
        ]
        total = len(r["growth"]["runs"])
        more = f" (the last 15 of {total})" if total > 15 else ""
        parts.append(
            page.table(
                f"Runs of {_e(name)}{more}: acceptance is accepted / (accepted + rejected); unused candidates were "
                "surplus or unfinished; tokens are prompt plus completion tokens of every request of the run.",
                RUN_COLUMNS,
                rows,
                ["nowrap", "nowrap", "nowrap", True, True, True, True, True, True, True, True],
            )
        )
    return "".join(parts)


def _verb_table(page: _Page, name: str, r: dict[str, Any]) -> str:
    """The full key of the verb–noun figure: every top verb (rank, colour) with its four nouns."""
    vn = r["diversity"]["verb_noun"]
    examples = r.get("examples", {})
    rows = []
    for rank, v in enumerate(vn["top"]):
        nouns = v["nouns"] + [None] * (4 - len(v["nouns"]))
        cells = [
            f'<span class="key" style="background:{svg.wedge_color(rank)}"></span>{rank + 1}',
            f'<span class="verb-key" data-verb="{_e(v["verb"])}">{_e(v["verb"])}</span>'
            + _examples("examples", examples.get("verbs", {}).get(v["verb"], []), anchor=f"verb-{rank + 1}"),
            _int(v["count"]),
        ]
        for letter, x in zip("abcd", nouns, strict=True):
            if x is None:
                cells.append("–")
                continue
            ex = examples.get("pairs", {}).get(f"{v['verb']} {x['noun']}", [])
            cells.append(
                f'<span class="noun-key" data-key="{_e(v["verb"])} {_e(x["noun"])}">{letter} {_e(x["noun"])}</span> '
                f"{_int(x['count'])}" + _examples("e.g.", ex)
            )
        rows.append(cells)
    return page.table(
        f"Key of the verb–noun figure{' of ' + _e(name) if page.compare else ''}: the {len(rows)} most common "
        "verbs (rank, colour as in the figure) with their four most common direct-object nouns (a–d, with the "
        "number of tasks), and example tasks of each.",
        ["#", "verb", "tasks", "noun a", "noun b", "noun c", "noun d"],
        rows,
        ["nowrap", "nowrap", True, "text", "text", "text", "text"],
    )


def _diversity(page: _Page) -> str:
    parts = ['<h2 id="diversity">2 Diversity</h2>', '<div class="grid">']
    series, as_share = _hist_series(page, lambda r: r["diversity"]["seed_rouge"]["histogram"])
    if not page.compare:
        stored = page.reports[0]["diversity"]["stored_max_similarity"]
        if stored["known"]:
            series.append(Series("stored max_similarity (seeds + pool)", stored["histogram"]["counts"], PALETTE[6]))
        series[0] = Series("to the nearest seed", series[0].values, series[0].color)
    edges = page.reports[0]["diversity"]["seed_rouge"]["histogram"]["edges"]
    chart = svg.histogram_chart(
        edges,
        series,
        title="ROUGE-L to the most similar seed",
        x_label="ROUGE-L F",
        y_label="share of tasks" if as_share else "tasks",
        y_format=svg.percent if as_share else svg.number,
    )
    caption = (
        "ROUGE-L F of each machine instruction to its most similar seed instruction, computed exactly "
        "(the paper's similarity analysis); bins of 0.05, a score on an edge counted in the bin it starts. "
        + (
            "In grey, the <code>max_similarity</code> stored at generation time, against the seeds <i>and</i> the "
            "pool then: a different number, bounded by the 0.7 novelty threshold. "
            if not page.compare
            else ""
        )
        + page.key()
    )
    labels = _bin_labels(edges, False, lambda x: f"{x:.2f}")
    more = "".join(
        _bin_examples(
            f"Example tasks of each bin{' of ' + _e(n) if page.compare else ''}",
            labels,
            r.get("examples", {}).get("seed_rouge", []),
            f"rouge-{k}",
        )
        for k, (n, r) in enumerate(zip(page.names, page.reports, strict=False))
    )
    parts.append("<div>" + page.figure(chart, caption) + more + "</div>")

    words: list[str] = []
    for r in page.reports:
        words += [x["word"] for x in r["diversity"]["leading_words"]["top"] if x["word"] not in words]
    words = words[:25]

    def word_share(r: dict[str, Any], w: str) -> float:
        comparison = r.get("comparison")
        if comparison is not None:
            count = comparison["leading_words"].get(w, 0)
        else:
            count = next((x["count"] for x in r["diversity"]["leading_words"]["top"] if x["word"] == w), 0)
        return count / (r["pool"]["tasks"] or 1)

    series = page.series(lambda r: [word_share(r, w) for w in words])
    chart = svg.bar_chart(words, series, title="Leading words", value_format=svg.share)
    parts.append(
        page.figure(
            chart,
            "Most common first words of instructions, as a share of tasks"
            + (" (each pool's full counts: a word outside a pool's top 20 is still counted)" if page.compare else "")
            + f". {page.key()}",
        )
    )
    parts.append("</div>")

    for name, r in zip(page.names, page.reports, strict=False):
        vn = r["diversity"]["verb_noun"]
        verbs = [(v["verb"], v["count"], [(n["noun"], n["count"]) for n in v["nouns"]]) for v in vn["top"]]
        chart = svg.sunburst(verbs, title=f"Verb–noun structure of {name}")
        heuristic = vn["method"] == "heuristic"
        in_top = sum(v["count"] for v in vn["top"])
        caption = (
            f"Verb–noun structure{' of ' + _e(name) if page.compare else ''} (the paper's Figure 2): the "
            f"{len(verbs)} most common root verbs (inner ring; {_int(in_top)} of the {_int(vn['with_verb'])} "
            f"instructions with a verb, of {_int(vn['instructions'])}) and each verb's 4 most common direct-object "
            "nouns (outer ring). Angles are counts relative to the verbs shown, and a verb's nouns fill its wedge "
            "relative to one another. Narrow wedges are named in the key table below (rank, a–d). "
            f"Method: {_e(vn['note'])}."
        )
        if heuristic:
            caption += " <b>Not a dependency parse</b>: install the extra <code>selfinstruct[parse]</code> for one."
        parts.append('<div class="grid one">' + page.figure(chart, caption) + _verb_table(page, name, r) + "</div>")

    def ngram_cell(get: Callable[[dict[str, Any]], dict[str, Any]], order: str) -> list[str]:
        return [
            f"{_int(get(r)[order]['distinct'])} / {_int(get(r)[order]['total'])} = {_num(get(r)[order]['ratio'])}"
            for r in page.reports
        ]

    head = ["n", *(f"distinct / total ({_e(n)})" for n in page.names)]
    matched = [(r.get("comparison") or {}).get("distinct_ngrams_matched") for r in page.reports]
    if page.compare and all(matched):
        head += [f"on {_int(m['tasks'])} tasks ({_e(n)})" for n, m in zip(page.names, matched, strict=False)]  # type: ignore[index]
    rows = []
    for order in ("1", "2", "3", "4"):
        cells = [order, *ngram_cell(lambda r: r["diversity"]["distinct_ngrams"], order)]
        if page.compare and all(matched):
            cells += ngram_cell(lambda r: r["comparison"]["distinct_ngrams_matched"]["ngrams"], order)
        rows.append(cells)
    note = ""
    if page.compare and all(matched):
        sampled = [(n, m) for n, m in zip(page.names, matched, strict=False) if m["sampled"]]  # type: ignore[index]
        if sampled:
            n, m = sampled[0][0], dict(sampled[0][1] or {})
            note = (
                f" Distinct-n falls as a pool grows, so the last columns compare equal sizes: {_e(n)} on a seeded "
                f"random subsample of {_int(m['tasks'])} of its {_int(m['of'])} tasks."
            )
    parts.append(
        page.table(
            "Distinct n-grams over all instructions (distinct-n; ROUGE tokens: lower-cased letters and digits)." + note,
            head,
            rows,
            [False] + [True] * (len(head) - 1),
        )
    )
    return "".join(parts)


def _shape(page: _Page) -> str:
    parts = ['<h2 id="shape">3 Shape</h2>', '<div class="grid">']
    for kind, what in (("instruction", "instructions"), ("input", "non-empty inputs"), ("output", "outputs")):
        series, as_share = _hist_series(page, lambda r, k=kind: r["shape"]["lengths"][k]["histogram"])  # type: ignore[misc]
        hist = page.reports[0]["shape"]["lengths"][kind]["histogram"]
        chart = svg.histogram_chart(
            hist["edges"],
            series,
            title=f"Length of {what}",
            x_label="words",
            y_label="share" if as_share else "count",
            overflow=True,
            y_format=svg.percent if as_share else svg.number,
        )
        medians = "; ".join(
            f"{_e(n)}: median {_num(r['shape']['lengths'][kind]['summary']['median'], 0)}"
            for n, r in zip(page.names, page.reports, strict=False)
        )
        top = hist["edges"][-2]
        labels = _bin_labels(hist["edges"], True, lambda x: f"{x:g}")
        labels = [lab if "+" in lab else f"{lab.split('–')[0]}–{float(lab.split('–')[1]) - 1:g}" for lab in labels]
        more = "".join(
            _bin_examples(
                f"Example tasks of each bin{' of ' + _e(n) if page.compare else ''}",
                [f"{lab} words" for lab in labels],
                r.get("examples", {}).get("lengths", {}).get(kind, []),
                f"len-{kind}-{k}",
            )
            for k, (n, r) in enumerate(zip(page.names, page.reports, strict=False))
        )
        parts.append(
            "<div>"
            + page.figure(
                chart,
                f"Length of {what} in words ({medians}); the bar set apart, {top:g}+, holds every {kind} of "
                f"{top:g} words or more. {page.key()}",
            )
            + more
            + "</div>"
        )

    counts = sorted({k for r in page.reports for k in r["shape"]["instances_per_task"]["counts"]}, key=int)
    series = page.series(lambda r: _shares([r["shape"]["instances_per_task"]["counts"].get(k, 0) for k in counts]))
    chart = svg.bar_chart(
        [f"{k} instance{'s' if k != '1' else ''}" for k in counts], series, title="Instances per task",
        value_format=svg.share,
    )  # fmt: skip
    parts.append(page.figure(chart, f"Instances per task, as a share of tasks. {page.key()}"))
    parts.append("</div>")

    rows = [
        [
            "classification tasks",
            *(
                f"{_int(r['shape']['classification']['count'])} ({_pct(r['shape']['classification']['share'])})"
                for r in page.reports
            ),
        ],
        [
            "tasks whose every input is empty",
            *(
                f"{_int(r['shape']['empty_input']['count'])} ({_pct(r['shape']['empty_input']['share'])})"
                for r in page.reports
            ),
        ],
        ["instances per task (mean)", *(_num(r["shape"]["instances_per_task"]["mean"], 2) for r in page.reports)],
        [
            "answers to “is it classification?”",
            *(
                _e(", ".join(f"{k} {v:,}" for k, v in r["shape"]["classification"]["answers"].items()))
                for r in page.reports
            ),
        ],
        ["distinct labels of classification tasks", *(_int(r["shape"]["labels"]["distinct"]) for r in page.reports)],
        ["share of the most common label", *(_pct(r["shape"]["labels"]["majority_share"]) for r in page.reports)],
    ]
    parts.append('<div class="grid">')
    parts.append(
        "<div>"
        + page.table("Task types.", ["", *(_e(n) for n in page.names)], rows, [False, *([True] * len(page.reports))])
        + "</div>"
    )
    labels_shown: list[str] = []
    for r in page.reports:
        labels_shown += [x["label"] for x in r["shape"]["labels"]["top"] if x["label"] not in labels_shown]
    labels_shown = labels_shown[:15]

    def label_share(r: dict[str, Any], lab: str) -> float:
        comparison = r.get("comparison")
        if comparison is not None:
            return comparison["labels"].get(lab, 0) / (comparison["label_total"] or 1)
        count = next((x["count"] for x in r["shape"]["labels"]["top"] if x["label"] == lab), 0)
        return count / (r["shape"]["labels"]["total"] or 1)

    series = page.series(lambda r: [label_share(r, lab) for lab in labels_shown])
    chart = svg.bar_chart(labels_shown, series, title="Labels of classification tasks", value_format=svg.share)
    parts.append(
        page.figure(chart, f"Most common outputs of classification tasks, as a share of their instances. {page.key()}")
    )
    parts.append("</div>")
    return "".join(parts)


def _ci(p: dict[str, Any]) -> str:
    if not p["n"]:
        return "–"
    return f"{_pct(p['share'])} [{_pct(p['low'])}, {_pct(p['high'])}] ({_int(p['yes'])}/{_int(p['n'])})"


PAPER_TABLE2 = {"instruction": "92%", "input": "79%", "output": "58%", "all": "54%"}
PAPER_TABLE1 = {
    "instructions": "52,445",
    "classification": "11,584",
    "non_classification": "40,861",
    "instances": "82,439",
    "instances_empty_input": "35,878",
    "mean_instruction_words": "15.9",
    "mean_input_words": "12.7",
    "mean_output_words": "18.9",
}


def _quality(page: _Page) -> str:
    parts = ['<h2 id="quality">4 Quality</h2>']
    t1_rows = [
        ("instructions", "instructions", _int),
        ("classification instructions", "classification", _int),
        ("non-classification instructions", "non_classification", _int),
        ("instances", "instances", _int),
        ("instances with an empty input", "instances_empty_input", _int),
        ("mean instruction length (words)", "mean_instruction_words", lambda x: _num(x, 1)),
        ("mean non-empty input length (words)", "mean_input_words", lambda x: _num(x, 1)),
        ("mean output length (words)", "mean_output_words", lambda x: _num(x, 1)),
    ]
    rows = [
        [_e(label), *(fmt(r["quality"]["table1"][key]) for r in page.reports), PAPER_TABLE1[key]]
        for label, key, fmt in t1_rows
    ]
    parts.append('<div class="grid">')
    parts.append(
        "<div>"
        + page.table(
            "The paper's Table 1 for this pool (instance-level counts; lengths in whitespace-separated words), "
            "beside the paper's 52K tasks.",
            ["", *(_e(n) for n in page.names), "paper"],
            rows,
            [False, *([True] * (len(page.reports) + 1))],
        )
        + "</div>"
    )
    sig_rows = []
    for name in page.reports[0]["quality"]["signals"]:
        first = page.reports[0]["quality"]["signals"][name]
        cells = [_e(first["what"])]
        for r in page.reports:
            sig = r["quality"]["signals"][name]
            items = [
                {"id": x["id"], "instruction": x["instruction"],
                 "detail": " | ".join(f"{i['input']!r} → {i['output']!r}" for i in x["instances"])}
                for x in sig["examples"]
            ]  # fmt: skip
            cells.append(f"{_int(sig['count'])} ({_pct(sig['share'])})" + _examples("examples", items))
        sig_rows.append(cells)
    parts.append(
        "<div>"
        + page.table(
            "Quality signals that need no judge: tasks with each problem (share of tasks), and examples.",
            ["tasks with", *(_e(n) for n in page.names)],
            sig_rows,
            [False, *(["text"] * len(page.reports))],
        )
        + "</div></div>"
    )

    for name, r in zip(page.names, page.reports, strict=False):
        of = f" of {_e(name)}" if page.compare else ""
        judge = r["quality"].get("judge")
        if not judge:
            parts.append(
                f'<div class="note">No judge scores{of}: run <code>selfinstruct judge</code> on the pool (or generate '
                "with <code>--judge-model</code>) to see their distribution here.</div>"
            )
        else:
            low, high = judge["scale"]
            values = [str(v) for v in range(low, high + 1)]
            extra = [k for k in judge["distribution"] if k not in values]
            keys = values + extra
            counts = [judge["distribution"].get(k, 0) for k in keys]
            if judge["judged"] > judge["scored"]:
                keys.append("no score")
                counts.append(judge["judged"] - judge["scored"])
            chart = svg.bar_chart(
                [f"score {k}" if k != "no score" else k for k in keys],
                [Series(name, counts, PALETTE[0])],
                title="Judge scores",
            )
            models = ", ".join(f"{_e(m)} ({_int(c)})" for m, c in judge["models"].items())
            parts.append('<div class="grid">')
            parts.append(
                page.figure(
                    chart,
                    f"Judge scores{of}: {_int(judge['judged'])} of {_int(judge['tasks'])} tasks judged, "
                    f"{_int(judge['scored'])} with a score (mean {_num(judge['mean'], 2)}); judge: {models}.",
                )
            )
            bars = list(judge["at_or_above"])
            rows = [["all judged", _int(judge["judged"]), _num(judge["mean"], 2),
                     *(_pct(judge["at_or_above"][b]) for b in bars)]]  # fmt: skip
            for group in judge["by_type"] + [{"group": "—", "judged": None}] + judge["by_round"]:
                if group["judged"] is None:
                    rows.append(["<i>by round</i>", "", "", *([""] * len(bars))])
                    continue
                rows.append(
                    [_e(group["group"]), _int(group["judged"]), _num(group["mean"], 2),
                     *(_pct(group["at_or_above"][b]) for b in bars)]
                )  # fmt: skip
            parts.append(
                "<div>"
                + page.table(
                    f"Share of scored tasks{of} at or above each bar, in all, by task type and by round.",
                    ["", "judged", "mean", *(f"≥ {b}" for b in bars)],
                    rows,
                    [False, True, True, *([True] * len(bars))],
                )
                + "</div></div>"
            )
        t2 = (judge or {}).get("table2")
        ratings = r["quality"].get("ratings")
        if t2 or ratings:
            head = ["", "paper (200 rated)"]
            cols = []
            if t2:
                head.append(f"judge, three verdicts ({_int(t2['tasks'])} tasks)")
                cols.append(t2)
            if ratings:
                head.append(f"people: <code>{_e(ratings['path'])}</code> ({_int(ratings['tasks'])} tasks)")
                cols.append(ratings)
            questions = (
                ("valid instruction", "instruction"),
                ("valid input", "input"),
                ("valid output", "output"),
                ("all fields valid", "all"),
            )
            rows = [[label, PAPER_TABLE2[key], *(_ci(c[key]) for c in cols)] for label, key in questions]
            parts.append(
                page.table(
                    f"The paper's Table 2{of}: the share of tasks whose instruction describes a valid task, whose "
                    "input fits it, whose output is correct, and all three; Wilson 95% intervals and counts.",
                    head,
                    rows,
                    [False, True, *([True] * len(cols))],
                )
            )
    parts.append(
        '<div class="note">To rate a sample by hand as the paper did: <code>selfinstruct report POOL --rating-sheet '
        "200</code> writes <code>rating_sheet.csv</code> and <code>.jsonl</code>; answer yes/no and pass the filled "
        "file back with <code>--ratings FILE</code>.</div>"
    )
    return "".join(parts)


def _samples(page: _Page) -> str:
    parts = ['<h2 id="samples">5 Samples</h2>']
    for k, (name, r) in enumerate(zip(page.names, page.reports, strict=False)):
        of = f" of {_e(name)}" if page.compare else ""
        s = r["samples"]
        rows = []
        for t in s["random"]:
            instances = "".join(
                f"<li>{_e(i['input']) or '<i>(empty input)</i>'} → {_e(i['output'])}</li>" for i in t["instances"]
            )
            more = f"<li><i>and {_int(t['more_instances'])} more</i></li>" if t.get("more_instances") else ""
            rows.append(
                [
                    f"<code>{_e(t['id'])}</code>",
                    _e(t["instruction"]),
                    f'<ol class="inst">{instances}{more}</ol>',
                    "yes" if t["is_classification"] else "no",
                ]
            )
        parts.append(
            page.table(
                f"A random sample{of} (seed {_e(s['seed'])}), every instance (input → output).",
                ["id", "instruction", "instances", "clf"],
                rows,
                ["nowrap", False, False, "nowrap"],
            )
        )
        rows = [[_e(t["instruction"]), _e(t["seed"]), _num(t["score"])] for t in s["closest_to_seed"]]
        parts.append(
            page.table(
                f"The tasks{of} closest to a seed (ROUGE-L F).",
                ["machine instruction", "most similar seed instruction", "F"],
                rows,
                [False, False, True],
            )
        )
        rows = []
        for group in s["rejects"]:
            for i, ex in enumerate(group["examples"] or [{}]):
                detail = ""
                if "most_similar" in ex:
                    detail = f"{_num(ex['score'])} to: {_e(ex['most_similar'])}"
                elif "keyword" in ex:
                    detail = f"keyword “{_e(ex['keyword'], MAX_LABEL_CHARS)}”"
                rows.append(
                    [
                        _e(group["reason"], MAX_LABEL_CHARS) if i == 0 else "",
                        _int(group["count"]) if i == 0 else "",
                        _e(ex.get("instruction", "")),
                        _int(ex["times"]) if "times" in ex else "",
                        detail,
                    ]
                )
        if rows:
            parts.append(
                f'<div id="rejects{"-" + str(k) if k else ""}">'
                + page.table(
                    f"Rejected candidates{of} by reason (from <code>rejected.jsonl</code>; surplus and unfinished "
                    "candidates are not rejections and are left out), with the most frequent instructions of each "
                    "reason and how often each was rejected.",
                    ["reason", "rejected", "instruction", "times", "detail"],
                    rows,
                    ["nowrap", True, False, True, False],
                )
                + "</div>"
            )
        else:
            parts.append(
                f'<div class="note" id="rejects{"-" + str(k) if k else ""}">No rejected candidates recorded{of} '
                "(<code>rejected.jsonl</code> is missing or empty: runs with <code>--no-keep-rejected</code> do not "
                "write it).</div>"
            )
    return "".join(parts)


def _embeddings(page: _Page) -> str:
    if not any(r.get("embeddings") for r in page.reports):
        return ""
    parts = ['<h2 id="embeddings">6 Embedding diversity</h2>', '<div class="grid">']
    present = [(n, r, c) for n, r, c in zip(page.names, page.reports, page.colors, strict=False) if r.get("embeddings")]
    emb0 = present[0][1]["embeddings"]
    if not emb0.get("instructions"):
        return ""
    edges = emb0["nearest_neighbour"]["histogram"]["edges"]
    series = [Series(n, _shares(r["embeddings"]["nearest_neighbour"]["histogram"]["counts"]), c) for n, r, c in present]
    chart = svg.histogram_chart(
        edges,
        series,
        title="Nearest-neighbour cosine distance",
        x_label="cosine distance",
        y_label="share of tasks",
        y_format=svg.percent,
    )
    sampled = [r["embeddings"] for _, r, _ in present if r["embeddings"].get("sampled")]
    caption = (
        f"Cosine distance of each instruction to its nearest other instruction of the whole pool, embedded with "
        f"{_e(emb0['model'])}"
        + (
            f" (a seeded random sample of {_int(sampled[0]['queries'])} of the {_int(sampled[0]['instructions'])} "
            "instructions as queries, each searched against every instruction)"
            if sampled
            else ""
        )
        + ". Mass near 0 means paraphrases that ROUGE-L does not catch. "
        + page.key()
    )
    parts.append(page.figure(chart, caption))
    rows = [
        [
            _e(n),
            _int(r["embeddings"]["instructions"]),
            _int(r["embeddings"].get("queries")),
            _num(r["embeddings"]["mean_pairwise_distance"]),
            _num(r["embeddings"]["nearest_neighbour"]["median"]),
            _pct(r["embeddings"]["nearest_neighbour"]["share_below_0_1"]),
        ]
        for n, r, _ in present
    ]
    parts.append(
        "<div>"
        + page.table(
            "Embedding diversity: the mean cosine distance over all pairs (higher is more diverse) and the nearest-"
            "neighbour distance of the queried instructions.",
            ["pool", "embedded", "queries", "mean pairwise", "NN median", "NN < 0.1"],
            rows,
            [False, True, True, True, True, True],
        )
        + "</div>"
    )
    parts.append("</div>")
    return "".join(parts)


def render_html(reports: Sequence[dict[str, Any]], *, version: str = "") -> str:
    """The page for one report, or two side by side (``--against``)."""
    if not 1 <= len(reports) <= 2:
        raise ValueError("render_html takes one or two reports")
    page = _Page(reports)
    body = [
        _header(page),
        _summary(page),
        _growth(page),
        _diversity(page),
        _shape(page),
        _quality(page),
        _samples(page),
        _embeddings(page),
    ]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    footer = (
        f"<footer>Generated by selfinstruct {_e(version)} <code>report</code> on {stamp}. The same numbers: "
        "<code>selfinstruct report POOL --json</code>; one row of measures per task: <code>--parquet FILE</code>. "
        "ROUGE-L is rouge-score's (no stemming), computed exactly.</footer>"
    )
    title = "selfinstruct report: " + " vs ".join(page.names)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{_e(title)}</title><style>{STYLE}</style></head>"
        f"<body><main>{''.join(body)}{footer}</main></body></html>\n"
    )
