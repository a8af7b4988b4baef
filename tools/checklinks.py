"""Check the links of the project's Markdown files: every relative link names a file that exists, and every
``#anchor`` names a heading of its target page (GitHub's slug rules). Links to other sites are not fetched.

Usage: ``python tools/checklinks.py [FILE.md ...]`` (default: README.md, CONTRIBUTING.md, CHANGELOG.md and
docs/*.md). Prints one line per broken link, ``file:line: target: why``, and exits 1 if there is any.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`[^`]*`")


def default_files() -> list[Path]:
    names = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md"]
    return [p for p in names if p.is_file()] + sorted((ROOT / "docs").glob("*.md"))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to hyphens.

    >>> slug("A judge: `--judge-model`, `--min-score`")
    'a-judge---judge-model---min-score'
    """
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link in a heading keeps its text
    text = text.lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def prose_lines(path: Path) -> list[tuple[int, str]]:
    """The lines of a Markdown file outside code fences, numbered from 1."""
    out, fenced = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((number, line))
    return out


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for _, line in prose_lines(path):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def broken_links(path: Path) -> list[str]:
    problems = []
    for number, line in prose_lines(path):
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ... not fetched
                continue
            file_part, _, anchor = target.partition("#")
            where = (path.parent / file_part).resolve() if file_part else path
            if not where.exists():
                problems.append(f"{path.relative_to(ROOT)}:{number}: {target}: no such file")
                continue
            if anchor and where.suffix == ".md" and anchor not in anchors(where):
                problems.append(f"{path.relative_to(ROOT)}:{number}: {target}: no heading with that anchor")
    return problems


def main(argv: list[str]) -> int:
    files = [Path(a).resolve() for a in argv] or default_files()
    problems = [p for f in files for p in broken_links(f)]
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
