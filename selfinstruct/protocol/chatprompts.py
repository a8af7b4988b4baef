"""Prompts for chat (instruct) models: the four Self-Instruct stages as a user's message, and the reading of
what a chat model answers.

A base model continues text, so the completion templates of :mod:`selfinstruct.protocol.prompts` end where the model
should go on (``9.``, ``Task: ...``). A chat model answers a request instead: the templates in
``prompts/chat/`` put the demonstrations into the user's message and then ask for the next items in the
same format.

Instruction generation has a second form, ``prefill`` (:data:`PREFILL`): the user asks for a numbered list
(``chat/instruction_prefill.txt``), and the assistant's reply is prefilled with the demonstrations as its
first items, then the next number (``9.`` after eight), left open, so the model writes on from item 9 as a base
model does, instead of answering a message that shows it examples (which small instruct models answer by
re-listing the examples). It needs a backend that continues an assistant message (vLLM in-process or
``vllm serve``); the other form, ``ask`` (:data:`ASK`), works with every chat API.

The formats are the ones the completion parsers already read (a numbered list; ``Yes``/``No``;
``Example N`` / ``Input:`` / ``Output:``; ``Class label:``), so the parsers here only undo the habits of
chat models first:

* a preamble ("Sure! Here are eight new tasks:") and a closing remark ("Let me know if ...", cut by
  :func:`strip_closing_remark`),
* Markdown: ``**Input:**``, ``### Example 2``, ````` fences, ``- `` bullets instead of numbers,
* a reasoning model's ``<think>...</think>`` block before its answer.

==================================  ======================================================================
``chat/instruction_generation.txt``  ``{examples}`` (numbered 1..k), ``{count}``; optional ``{first}``, ``{last}``
``chat/instruction_prefill.txt``     ``{total}`` (k + count); optional ``{count}``, ``{first}``, ``{last}``
``chat/classification.txt``          ``{examples}`` (``Task:`` / ``Is it classification?``), ``{instruction}``
``chat/instances_input_first.txt``   ``{examples}`` (input-first blocks), ``{instruction}``
``chat/instances_output_first.txt``  ``{examples}`` (output-first blocks), ``{instruction}``
==================================  ======================================================================

This module renders and parses; it sends nothing and decides nothing about a candidate's fate.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from selfinstruct.engines.chat import Chat, ChatMessage, user_chat
from selfinstruct.errors import ConfigError
from selfinstruct.pool.inputs import SMALL_LIMIT_BYTES
from selfinstruct.pool.task import Task, read_text_file
from selfinstruct.protocol.prompts import (
    ParsedInstances,
    _fill,
    one_line,
    parse_classification,
    parse_input_first,
    parse_output_first,
    render_input_first,
    render_output_first,
)

CHAT_DIR = "chat"
CHAT_TEMPLATE_FILES = {
    "instruction_generation": "instruction_generation.txt",
    "classification": "classification.txt",
    "instances_input_first": "instances_input_first.txt",
    "instances_output_first": "instances_output_first.txt",
}
_REQUIRED = {
    "instruction_generation": ("{examples}", "{count}"),
    "classification": ("{examples}", "{instruction}"),
    "instances_input_first": ("{examples}", "{instruction}"),
    "instances_output_first": ("{examples}", "{instruction}"),
}

#: The optional template of the prefill form (a missing file leaves only the ask form).
PREFILL_TEMPLATE_FILE = "instruction_prefill.txt"
PREFILL_REQUIRED = ("{total}",)

#: Forms of the instruction-generation chat: the demonstrations in the user's message and a request for
#: more (``ask``), or the demonstrations as the start of the assistant's reply, which the model continues
#: (``prefill``). ``auto`` (a setting, not a form) is prefill where the backend can continue a reply.
ASK = "ask"
PREFILL = "prefill"
#: The shortest demonstration that becomes a stop string of a prefilled reply (see ChatTemplates.copy_stops).
COPY_STOP_MIN_CHARS = 24
CHAT_FORMS = (ASK, PREFILL)

#: New instructions asked for per chat request: what a completion prompt of 8 demonstrations yields at most
#: before its stop at item 16.
DEFAULT_CHAT_LIST_SIZE = 8


def load_template(path: Path, placeholders: Sequence[str], hint: str) -> str:
    """One template file's text; a missing file or placeholder is a :class:`ConfigError` naming the file."""
    if not path.exists():
        raise ConfigError(f"{path}: prompt template missing ({hint})")
    text = read_text_file(path, limit=SMALL_LIMIT_BYTES, what="a prompt template")
    for placeholder in placeholders:
        if placeholder not in text:
            raise ConfigError(f"{path}: the template must contain the placeholder {placeholder}")
    return text


def fingerprint(*texts: str) -> str:
    """A short hash of template texts, stored with a pool so a later run can tell they changed."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class ChatTemplates:
    """The four chat template texts (user messages), loaded from ``<prompts>/chat/``."""

    instruction_generation: str
    classification: str
    instances_input_first: str
    instances_output_first: str
    source: str = "<memory>"
    #: The user's message of the prefill form; None when the prompts directory has no such template.
    instruction_prefill: str | None = None
    #: How instruction generation is asked: :data:`ASK` or :data:`PREFILL`.
    form: str = ASK

    def __post_init__(self) -> None:
        if self.form not in CHAT_FORMS:
            raise ValueError(f"unknown chat form {self.form!r}: expected one of {', '.join(CHAT_FORMS)}")
        if self.form == PREFILL and self.instruction_prefill is None:
            raise ConfigError(
                f"{Path(self.source) / PREFILL_TEMPLATE_FILE}: prompt template missing (the prefill chat form needs "
                "it; copy it from the folder prompts/chat of selfinstruct, or use --chat-form ask)"
            )

    @classmethod
    def load(cls, prompts_dir: str | Path, form: str = ASK) -> ChatTemplates:
        """Read ``<prompts_dir>/chat/*.txt``; a missing directory, file or placeholder is a ConfigError
        (``instruction_prefill.txt`` may be missing unless ``form`` is :data:`PREFILL`)."""
        root = Path(prompts_dir) / CHAT_DIR
        if not root.is_dir():
            raise ConfigError(
                f"{root}: chat prompt templates not found (a chat model needs them; copy the folder prompts/chat "
                "of selfinstruct into your --prompts directory)"
            )
        texts = {
            key: load_template(root / name, _REQUIRED[key], f"expected {name} in {root}")
            for key, name in CHAT_TEMPLATE_FILES.items()
        }
        prefill_path = root / PREFILL_TEMPLATE_FILE
        prefill = (
            load_template(prefill_path, PREFILL_REQUIRED, f"expected {PREFILL_TEMPLATE_FILE} in {root}")
            if prefill_path.exists()
            else None
        )
        return cls(**texts, source=str(root), instruction_prefill=prefill, form=form)

    @property
    def can_prefill(self) -> bool:
        """Whether the prefill form's template is there."""
        return self.instruction_prefill is not None

    def with_form(self, form: str) -> ChatTemplates:
        """The same templates asking for instructions in ``form``."""
        return dataclasses.replace(self, form=form)

    def fingerprint(self) -> str:
        """The hash of the templates this form uses (the ask form's is the one pools have always recorded)."""
        texts = [getattr(self, key) for key in CHAT_TEMPLATE_FILES]
        if self.form == PREFILL:
            assert self.instruction_prefill is not None
            texts += [PREFILL, self.instruction_prefill]
        return fingerprint(*texts)

    def instruction_chat(self, demos: Sequence[str], count: int = DEFAULT_CHAT_LIST_SIZE) -> Chat:
        """The demonstrations as a numbered list in the user's message, asking for ``count`` more. The
        optional placeholders ``{first}`` and ``{last}`` number the new items on from the examples
        (``k + 1`` to ``k + count``), so that a model re-listing the examples is told apart by number too.

        >>> t = ChatTemplates("Examples:\\n{examples}\\nWrite {count} more.", "", "", "")
        >>> print(t.instruction_chat(["Say hi.", "Count to  three."], 2)[0].content)
        Examples:
        1. Say hi.
        2. Count to three.
        Write 2 more.
        """
        examples = "\n".join(f"{i}. {one_line(text)}" for i, text in enumerate(demos, start=1))
        first, last = len(demos) + 1, len(demos) + count
        numbers = {"count": str(count), "first": str(first), "last": str(last)}
        if self.form == PREFILL:
            assert self.instruction_prefill is not None
            request = _fill(self.instruction_prefill, total=str(last), **numbers).strip()
            opened = f"{examples}\n{self.reply_prefix(demos)}" if examples else self.reply_prefix(demos)
            return (ChatMessage("user", request), ChatMessage("assistant", opened))
        filled = _fill(self.instruction_generation, examples=examples, **numbers)
        return user_chat(filled.strip())

    def reply_prefix(self, demos: Sequence[str]) -> str:
        """The start of the list item that a reply to :meth:`instruction_chat` continues: the number after the
        demonstrations (``9.``) in the prefill form, nothing in the ask form. The reader puts it back in front
        of the reply, so the first new item is read like the others.

        >>> t = ChatTemplates("{examples}{count}", "", "", "", instruction_prefill="List {total}.", form=PREFILL)
        >>> [m.content for m in t.instruction_chat(["Say hi.", "Count to three."], 2)]
        ['List 4.', '1. Say hi.\\n2. Count to three.\\n3.']
        >>> t.reply_prefix(["Say hi.", "Count to three."]), t.with_form(ASK).reply_prefix(["Say hi."])
        ('3.', '')
        """
        return f"{len(demos) + 1}." if self.form == PREFILL else ""

    def copy_stops(self, demos: Sequence[str]) -> tuple[str, ...]:
        """Stop strings that end a prefilled reply where it starts re-listing its demonstrations: each
        demonstration's text without its closing punctuation, when at least :data:`COPY_STOP_MIN_CHARS` long
        (a shorter one could end a new item that merely contains it). A model that loops back over the items
        it was shown rarely writes anything new after them, so the reply ends there instead of spending its
        tokens on copies. Nothing in the ask form, where a reply re-lists the examples before its own.

        >>> t = ChatTemplates("{examples}{count}", "", "", "", instruction_prefill="List {total}.", form=PREFILL)
        >>> t.copy_stops(["Name three rivers in Africa.", "Say hi."])
        ('Name three rivers in Africa',)
        >>> t.with_form(ASK).copy_stops(["Name three rivers in Africa."])
        ()
        """
        if self.form != PREFILL:
            return ()
        stops = (one_line(text).rstrip(" .!?;:") for text in demos)
        return tuple(dict.fromkeys(s for s in stops if len(s) >= COPY_STOP_MIN_CHARS))

    def classification_chat(self, demos: Sequence[Task], instruction: str) -> Chat:
        examples = "".join(
            f"Task: {one_line(t.instruction)}\nIs it classification? {'Yes' if t.is_classification else 'No'}\n\n"
            for t in demos
        )
        return user_chat(_fill(self.classification, examples=examples, instruction=one_line(instruction)).strip())

    def instance_chat(self, demos: Sequence[Task], instruction: str, *, classification: bool) -> Chat:
        render = render_output_first if classification else render_input_first
        template = self.instances_output_first if classification else self.instances_input_first
        examples = "".join(render(t) + "\n" for t in demos)
        return user_chat(_fill(template, examples=examples, instruction=one_line(instruction)).strip())


# -- reading chat replies ------------------------------------------------------------------------------

_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"^[ \t]*```[^\n]*$\n?", re.MULTILINE)
# Markdown emphasis around a marker at the start of a line: "**Input:**", "__Output__:", "*Example 2*".
_EMPHASIS = re.compile(
    r"^([ \t]*)(?:#{1,6}[ \t]*)?[*_]{1,2}[ \t]*((?:Example[ \t]+\d+|Input|Output|Class label|Task|Instruction|Score|"
    r"Reason)[ \t]*:?)[ \t]*[*_]{1,2}(:?)",
    re.MULTILINE | re.IGNORECASE,
)
_HEADING = re.compile(r"^[ \t]*#{1,6}[ \t]*", re.MULTILINE)


def strip_chat_markup(text: str) -> str:
    """Undo chat habits that hide the markers: a ``<think>`` block, code fences, Markdown headings and
    emphasis around ``Example N`` / ``Input:`` / ``Output:`` / ``Class label:`` and the like.

    >>> strip_chat_markup("<think>hmm</think>### Example 1\\n**Input:** 2+2\\n**Output**: 4")
    'Example 1\\nInput: 2+2\\nOutput: 4'
    """
    text = _THINK.sub("", text)
    text = _FENCE.sub("", text)
    text = _EMPHASIS.sub(lambda m: m.group(1) + m.group(2) + m.group(3), text)
    text = _HEADING.sub("", text)
    return text.strip("\n")


_CLOSING = re.compile(
    r"(?i)(?:i hope|hope (?:this|these)|let me know|feel free|these (?:tasks|examples|requests)|each (?:task|example)"
    r"|note:|note that|would you like|if you (?:need|want|would)|happy to help|enjoy)"
)


def strip_closing_remark(text: str) -> str:
    """``text`` without a chat model's closing remark: a last paragraph (after a blank line) that opens like
    one ("Let me know if ...", "I hope these help!"). Other last paragraphs stay: outputs may have several.

    >>> strip_closing_remark("Output: 4\\n\\nLet me know if you need more!")
    'Output: 4'
    """
    text = text.rstrip()
    head, sep, tail = text.rpartition("\n\n")
    if sep and _CLOSING.match(tail.strip()):
        return head.rstrip()
    return text


# An item's first line: a number ("3.", "3)", "#3", "**3.**" after the markup is gone), a bullet, or a
# numbered label ("Task 9:", "Request 9 -"); group 1 the marker, group 2 the text (may be empty: a marker on a
# line of its own, its text on the next lines).
_ITEM = re.compile(
    r"^([ \t]*)(?:\*\*|__)?((?:#?\d+[ \t]*[.):]|[-*•+])|(?:task|request|instruction|item|question|prompt|example)"
    r"[ \t]*#?\d+[ \t]*[.:)\-–]?)(?:\*\*|__)?(?:[ \t]+(.*\S))?[ \t]*$",
    re.IGNORECASE,
)
# A line that is a list marker and nothing else: never an item ("2", "3.", "-", "Task 4").
_BARE_MARKER = re.compile(
    r"^(?:#?\d+[ \t]*[.):]?|[-*•+]|(?:task|request|instruction|item|question|prompt|example)"
    r"[ \t]*#?\d*[ \t]*[.:)\-–]?)$",
    re.IGNORECASE,
)
# A line holding a marker only ("6", "**4.**", "Task 5"), with its indentation as group 1, no text (group 3).
_LONE = re.compile(r"^([ \t]*)(\S+(?:[ \t]+\S+)?)()[ \t]*$")
_LETTER = re.compile(r"[^\W\d_]")
# What a chat model wraps an item in: a label ("Request:", "New task 9:", "Instruction:"), then quotes.
_WRAPPER = re.compile(
    r"^(?:(?:new[ \t]+)?(?:task|request|instruction|item|question|prompt)[ \t]*#?\d*[ \t]*[:\-–][ \t]*)", re.IGNORECASE
)
_QUOTES = {'"': '"', "“": "”", "'": "'", "‘": "’", "«": "»", "`": "`"}
# A short emphasised label before the item ("**Writing:** Compose ...", "*Code* - Fix ..."): a category.
_LABEL = re.compile(r"^(?:\*\*|__)([^*_\n]{1,40}?)(?:[ \t]*:(?:\*\*|__)|(?:\*\*|__)[ \t]*[:\-–])[ \t]*(?=\S)")

#: Notes of the list reader: lines that look like items but are not candidates.
LIST_MARKER = "list_marker"  # a bare number or bullet ("2.", "-") with no text of its own
LIST_HEADING = "list_heading"  # an item that only heads a group ("Analysis:", "1. **Writing tasks:**")
SUB_ITEM = "sub_item"  # a nested bullet under an item ("- Explanation: ...")


def unwrap_item(text: str) -> str:
    """An item without the wrapping chat models put around it: a label (``Request:``, ``Task 9:``), a short
    emphasised category, and quotes around the whole (with a comment after the closing quote dropped).

    >>> unwrap_item('Request: "Summarise the paragraph below in two sentences."')
    'Summarise the paragraph below in two sentences.'
    >>> unwrap_item('**Analysis:** Compare the two poems below.')
    'Compare the two poems below.'
    >>> unwrap_item('“Name three rivers in Africa.” - tests geography')
    'Name three rivers in Africa.'
    """
    text = text.strip()
    for _ in range(3):  # "**Request 3:** "..."" takes a label, then the quotes
        before = text
        label = _LABEL.match(text)
        if label and len(label.group(1).split()) <= 4 and len(text[label.end() :].split()) >= 2:
            text = text[label.end() :]
        text = _WRAPPER.sub("", text, count=1).strip()
        close = _QUOTES.get(text[:1])
        if close:
            end = text.rfind(close, 1)
            rest = text[end + 1 :].strip() if end > 0 else ""
            # The quoted part is the item when nothing follows it, or only a remark ("- tests ...", "(easy)").
            if end > 1 and (not rest or rest[:1] in "-–—(:[,"):
                text = text[1:end].strip()
        if text == before:
            break
    return text.replace("**", "").replace("__", "").strip()


@dataclass(frozen=True, slots=True)
class ChatList:
    """Items of a chat model's list. ``chatter`` counts lines outside the list (preamble, closing remarks);
    ``notes`` counts list lines that are not candidates, by :data:`LIST_MARKER`, :data:`LIST_HEADING` and
    :data:`SUB_ITEM`."""

    items: list[str]
    chatter: int
    notes: dict[str, int] = field(default_factory=dict)


def _kind(marker: str) -> str:
    """``number`` for ``3.`` / ``Task 3:``, ``bullet`` for ``-`` / ``*``."""
    return "bullet" if marker.strip() in ("-", "*", "•", "+") else "number"


def parse_chat_list(text: str, *, truncated: bool) -> ChatList:
    """Read a numbered (or bulleted) list out of a chat reply.

    An item starts at a line ``N.``, ``N)``, ``Task N:``, ``-`` or ``*``; a following line that is neither
    blank nor a new item continues it (so a marker alone on its line takes the text under it). Lines before
    the first item and after a blank line that ends the list are chatter. Only items of the list's top level
    are candidates: a nested item (indented deeper, or a bullet under numbered items) is a :data:`SUB_ITEM`,
    an item that ends with a colon heads a group (:data:`LIST_HEADING`), and a marker with no text at all is
    a :data:`LIST_MARKER`; each is noted, none is a candidate. Wrappers are removed (:func:`unwrap_item`).
    When the reply was cut off at ``max_tokens`` (``truncated``) its last item is incomplete and dropped.

    >>> r = parse_chat_list("Sure! Here they are:\\n\\n1. **Add** two numbers.\\n2. Name a\\n   red fruit.\\n\\nEnjoy!",
    ...                     truncated=False)
    >>> r.items, r.chatter
    (['Add two numbers.', 'Name a red fruit.'], 2)
    >>> r = parse_chat_list("1. Analysis:\\n   - Explanation: it compares.\\n2.\\n3. Request: \\"List two primes.\\"",
    ...                     truncated=False)
    >>> r.items, r.notes
    (['List two primes.'], {'list_heading': 1, 'sub_item': 1, 'list_marker': 1})
    """
    notes: dict[str, int] = {}
    chatter = 0
    entries: list[tuple[str, list[str]]] = []  # (role, lines): role is "item" or a note
    current: list[str] | None = None  # the lines of the entry being read; None outside the list
    top: tuple[int, str] | None = None  # indentation and kind of the list's top-level markers
    for raw in strip_chat_markup(text).split("\n"):
        line = raw.strip()
        match = _ITEM.match(raw) or (_BARE_MARKER.match(line.replace("**", "").replace("__", "")) and _LONE.match(raw))
        if match:
            indent, kind = len(match.group(1).expandtabs(4)), _kind(match.group(2))
            if top is None or (current is None and not entries):
                top = (indent, kind)
            nested = indent > top[0] + 1 or (kind != top[1] and indent >= top[0] and top[1] == "number")
            current = [match.group(3) or ""]
            entries.append((SUB_ITEM if nested else "item", current))
        elif not line:
            current = None
            continue
        elif current is not None:
            current.append(line)
        else:
            chatter += 1
    items: list[str] = []
    for role, lines in entries:
        text_ = one_line(" ".join(lines))
        if role == "item":
            stripped = text_.replace("**", "").replace("__", "").strip()
            if not _LETTER.search(stripped):  # "2", "3. 4.", "—": numbers and marks, no words
                role = LIST_MARKER
            elif stripped.endswith(":") and len(stripped.split()) <= 6:
                role = LIST_HEADING
        if role != "item":
            notes[role] = notes.get(role, 0) + 1
            continue
        item = unwrap_item(text_)
        if not _LETTER.search(item) or _BARE_MARKER.match(item):
            notes[LIST_MARKER] = notes.get(LIST_MARKER, 0) + 1
            continue
        items.append(item)
    if truncated and items:
        items.pop()
    return ChatList(items, chatter, notes)


_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def parse_chat_classification(text: str) -> bool | None:
    """``Yes`` or ``No`` wherever the reply first says one of them as a word, else None.

    >>> [parse_chat_classification(t) for t in ("**Yes**", "Answer: No.", "It is. Yes", "Maybe", "Not sure")]
    [True, False, True, None, None]
    """
    text = strip_chat_markup(text)
    direct = parse_classification(text)
    if direct is not None:
        return direct
    match = _YES_NO.search(text)
    if match is None:
        return None
    return match.group(1).lower() == "yes"


_FIRST_BLOCK = {
    False: re.compile(r"^[ \t]*(?:Example[ \t]+\d+|Input[ \t]*:|Output[ \t]*:)", re.MULTILINE | re.IGNORECASE),
    True: re.compile(r"^[ \t]*(?:Example[ \t]+\d+|Class label[ \t]*:)", re.MULTILINE | re.IGNORECASE),
}
_CASE = re.compile(r"^([ \t]*)(example|input|output|class label)(?=[ \t]*(?::|\d))", re.MULTILINE | re.IGNORECASE)
_CANON = {"example": "Example", "input": "Input", "output": "Output", "class label": "Class label"}


def parse_chat_instances(text: str, *, truncated: bool, output_first: bool) -> ParsedInstances:
    """Instances from a chat reply in the input-first or output-first format: markup stripped, the preamble
    before the first example dropped, marker case normalised, then the completion parsers.

    >>> parse_chat_instances("Here you go!\\n\\n**Example 1**\\n**Input:** 2+2\\n**Output:** 4", truncated=False,
    ...                      output_first=False).instances
    [Instance(input='2+2', output='4')]
    """
    body = strip_closing_remark(strip_chat_markup(text))
    first = _FIRST_BLOCK[output_first].search(body)
    body = body[first.start() :] if first else body
    body = _CASE.sub(lambda m: m.group(1) + _CANON[m.group(2).lower()], body)
    parse = parse_output_first if output_first else parse_input_first
    return parse(body, truncated=truncated)


__all__ = [
    "ASK",
    "CHAT_DIR",
    "CHAT_FORMS",
    "CHAT_TEMPLATE_FILES",
    "DEFAULT_CHAT_LIST_SIZE",
    "LIST_HEADING",
    "LIST_MARKER",
    "PREFILL",
    "PREFILL_TEMPLATE_FILE",
    "SUB_ITEM",
    "ChatList",
    "ChatTemplates",
    "fingerprint",
    "load_template",
    "parse_chat_classification",
    "parse_chat_instances",
    "parse_chat_list",
    "strip_chat_markup",
    "strip_closing_remark",
    "unwrap_item",
]
