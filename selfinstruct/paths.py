"""Where the default seed file and prompt templates live, in a source checkout and in an installed wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _data_dir(name: str) -> Path:
    # A wheel carries the data as selfinstruct/_<name>; a source checkout (or editable install) has it at the
    # repository's top level, one folder above the package.
    installed = _PACKAGE / f"_{name}"
    if installed.is_dir():
        return installed
    return _PACKAGE.parent / name


def default_seeds_path() -> Path:
    """The project's own seed tasks (``seeds/seed_tasks.jsonl``)."""
    return _data_dir("seeds") / "seed_tasks.jsonl"


def default_prompts_dir() -> Path:
    """The project's default prompt templates (``prompts/``)."""
    return _data_dir("prompts")
