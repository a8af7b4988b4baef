"""The wheel: every subpackage of ``selfinstruct`` is listed in pyproject.toml, so that an ordinary (not
editable) install holds the whole program. Subpackages were added by a refactor and a wheel without them
failed at the first command that imports one (``selfinstruct status``: No module named 'selfinstruct.views')."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_in_the_wheel() -> None:
    tomllib = pytest.importorskip("tomllib")
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "selfinstruct").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert found, "no package found"
    assert found <= listed, f"missing from [tool.setuptools] packages: {sorted(found - listed)}"
