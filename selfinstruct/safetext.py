"""Text from outside (pool and seed files, server replies, the ledger, model ids) made safe to show and to store.

Scope: two small functions that every message built from untrusted text goes through. It does not decide
what to show; the command line does.

* :func:`clean` removes what a terminal would obey instead of print: ANSI/VT escape sequences (CSI such as
  ``ESC [ 2 J``, OSC such as ``ESC ] 0 ; title BEL`` that retitles a window, DCS/APC/PM/SOS strings), the
  C0 and C1 control characters (``\\r`` that rewrites a line, ``\\x9b`` that is a one-byte CSI), and the
  Unicode bidirectional overrides that make text read backwards. Newlines and tabs are kept.
* :func:`markup` is :func:`clean` followed by rich's markup escape, for text put inside a string that rich
  reads as markup (``[bold]...[/]``): a seed mentioning ``[INST]`` or a ledger value ``[/]`` is then
  printed as it is, instead of being taken for a style or crashing the print.

>>> clean("ok\\x1b]0;pwned\\x07 \\x1b[31mred\\x1b[0m\\r!")
'ok red!'
>>> markup("[INST] hi [/INST]")
'\\\\[INST] hi \\\\[/INST]'
"""

from __future__ import annotations

import re
from typing import Any

# One alternation, longest forms first: string commands (OSC, DCS, SOS, PM, APC) end at BEL or ST (ESC \\)
# or run to the end of the text; CSI has parameter, intermediate and final bytes; any other ESC takes the
# next character with it. The 8-bit C1 forms (\x9b CSI, \x9d OSC, ...) are caught by the control range.
_ESCAPES = re.compile(
    r"\x1b[\]PX^_][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|[\x90\x98\x9d\x9e\x9f][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|\x1b[\s\S]?"
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def clean(text: str) -> str:
    """``text`` without escape sequences and control characters (newline and tab kept)."""
    return _ESCAPES.sub("", text) if text else text


def markup(text: object) -> str:
    """``str(text)``, cleaned and escaped for a rich markup string."""
    from rich.markup import escape

    return escape(clean(str(text)))


def clean_value(value: Any) -> Any:
    """A JSON-like value with :func:`clean` applied to every string in it, keys included."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return {clean(k) if isinstance(k, str) else k: clean_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_value(v) for v in value]
    return value


__all__ = ["clean", "clean_value", "markup"]
