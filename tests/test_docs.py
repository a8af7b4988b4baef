"""The documentation holds together: every relative link and anchor in the Markdown files resolves, and the
README stays a page a newcomer reads in five minutes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _checker():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("checklinks", ROOT / "tools" / "checklinks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["checklinks"] = module
    spec.loader.exec_module(module)
    return module


checklinks = _checker()


@pytest.mark.parametrize("page", checklinks.default_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(page: Path) -> None:
    assert checklinks.broken_links(page) == []


def test_the_docs_pages_are_all_reachable_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in readme, f"{page.name} is not linked from README.md"


def test_readme_stays_short() -> None:
    assert (ROOT / "README.md").stat().st_size <= 12 * 1024


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Engine options", "engine-options"),
        ("No GPU? A real model on the CPU", "no-gpu-a-real-model-on-the-cpu"),
        ("A judge: `--judge-model`, `--min-score`", "a-judge---judge-model---min-score"),
        ("Provenance and `similarity_floor`", "provenance-and-similarity_floor"),
        ("TRL (SFTTrainer)", "trl-sfttrainer"),
    ],
)
def test_anchors_follow_githubs_rules(heading: str, anchor: str) -> None:
    assert checklinks.slug(heading) == anchor


def test_a_broken_link_and_a_missing_anchor_are_reported(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n[ok](#title) [gone](missing.md) [bad](#nowhere)\n\n```\n[in code](ignored.md)\n```\n",
        encoding="utf-8",
    )
    root, checklinks.ROOT = checklinks.ROOT, tmp_path
    try:
        problems = checklinks.broken_links(page)
    finally:
        checklinks.ROOT = root
    assert problems == ["page.md:3: missing.md: no such file", "page.md:3: #nowhere: no heading with that anchor"]
