"""Prompt templates, rendering of demonstrations, and parsing of completions: both directions of one format.

The four templates live as plain text in ``prompts/`` (or a user's copy given with ``--prompts DIR``):

==============================  ===========================================================================
``instruction_generation.txt``  a preamble and ``{examples}``: a numbered list ``1.`` ... ``8.`` that ends
                                with the next number, ``9.``, so a base LM continues the list.
``classification.txt``          ``{examples}`` of ``Task: ...`` / ``Is it classification? Yes|No``, then the
                                new ``{instruction}``; the prompt ends with the question.
``instances_input_first.txt``   ``{examples}`` shaped ``Task:`` / ``Example N`` / ``Input:`` / ``Output:``
                                (just ``Output:`` when the task needs no input), then ``{instruction}``.
``instances_output_first.txt``  ``{examples}`` shaped ``Task:`` / ``Class label:`` / ``Input:``, for
                                classification tasks, then ``{instruction}``.
==============================  ===========================================================================

A user may change the wording freely; the markers are written by the code below, and the parsers here read
them back, so a change of marker is one change in this module. Placeholders are replaced literally
(``str.replace``), so braces elsewhere in a template are harmless.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from selfinstruct.errors import ConfigError
from selfinstruct.pool.inputs import SMALL_LIMIT_BYTES
from selfinstruct.pool.task import Instance, Task, read_text_file

TEMPLATE_FILES = {
    "instruction_generation": "instruction_generation.txt",
    "classification": "classification.txt",
    "instances_input_first": "instances_input_first.txt",
    "instances_output_first": "instances_output_first.txt",
}
_REQUIRED_PLACEHOLDERS = {
    "instruction_generation": ("{examples}",),
    "classification": ("{examples}", "{instruction}"),
    "instances_input_first": ("{examples}", "{instruction}"),
    "instances_output_first": ("{examples}", "{instruction}"),
}

# Stop sequences. The instruction list ends at item 16 or at a blank line; an instance completion ends when
# the model starts a sixth example or a new task.
INSTRUCTION_STOP = ("\n\n", "\n16", "16.", "16 .")
CLASSIFICATION_STOP = ("\n",)
INSTANCE_STOP = ("Example 6", "\nTask:")

_WS = re.compile(r"\s+")


def one_line(text: str) -> str:
    """Collapse every run of whitespace to one space: ``" a\\n  b "`` -> ``"a b"``."""
    return _WS.sub(" ", text).strip()


@dataclass(frozen=True)
class PromptTemplates:
    """The four template texts, loaded from a directory."""

    instruction_generation: str
    classification: str
    instances_input_first: str
    instances_output_first: str
    source: str = "<memory>"

    @classmethod
    def load(cls, directory: str | Path) -> PromptTemplates:
        """Read the four ``.txt`` templates from ``directory``; a missing file or placeholder is an error."""
        root = Path(directory)
        if not root.is_dir():
            what = "is a file; --prompts names a directory of templates" if root.exists() else "directory not found"
            raise ConfigError(f"{root}: prompt {what}" if not root.exists() else f"{root} {what}")
        texts: dict[str, str] = {}
        for key, filename in TEMPLATE_FILES.items():
            path = root / filename
            if not path.exists():
                raise ConfigError(f"{path}: prompt template missing (expected {filename} in {root})")
            text = read_text_file(path, limit=SMALL_LIMIT_BYTES, what="a prompt template")
            for placeholder in _REQUIRED_PLACEHOLDERS[key]:
                if placeholder not in text:
                    raise ConfigError(f"{path}: the template must contain the placeholder {placeholder}")
            texts[key] = text
        return cls(**texts, source=str(root))

    def fingerprint(self) -> str:
        """A short hash of the four texts, stored with a pool so a later run can tell templates changed."""
        digest = hashlib.sha256()
        for key in TEMPLATE_FILES:
            digest.update(getattr(self, key).encode("utf-8"))
            digest.update(b"\0")
        return digest.hexdigest()[:16]

    # -- rendering ---------------------------------------------------------------------------------------

    def instruction_prompt(self, demos: Sequence[str]) -> str:
        """Number the demonstration instructions and end with the next number for the model to continue.

        >>> t = PromptTemplates("Tasks:\\n\\n{examples}\\n", "{examples}{instruction}", "{examples}{instruction}",
        ...                     "{examples}{instruction}")
        >>> print(t.instruction_prompt(["Say hi.", "Count to  three."]))
        Tasks:
        <BLANKLINE>
        1. Say hi.
        2. Count to three.
        3.
        """
        lines = [f"{i}. {one_line(text)}" for i, text in enumerate(demos, start=1)]
        lines.append(f"{len(demos) + 1}.")
        return _fill(self.instruction_generation, examples="\n".join(lines)).rstrip()

    def classification_prompt(self, demos: Sequence[Task], instruction: str) -> str:
        examples = "".join(
            f"Task: {one_line(t.instruction)}\nIs it classification? {'Yes' if t.is_classification else 'No'}\n\n"
            for t in demos
        )
        return _fill(self.classification, examples=examples, instruction=one_line(instruction)).rstrip()

    def instance_prompt(self, demos: Sequence[Task], instruction: str, *, classification: bool) -> str:
        render = render_output_first if classification else render_input_first
        template = self.instances_output_first if classification else self.instances_input_first
        examples = "".join(render(t) + "\n" for t in demos)
        return _fill(template, examples=examples, instruction=one_line(instruction)).rstrip() + "\n"


def _fill(template: str, **values: str) -> str:
    # One pass over the template only: a value (a demonstration) that itself contains "{instruction}" must
    # not be filled in by a later placeholder.
    pattern = re.compile("|".join(re.escape("{" + key + "}") for key in values))
    return pattern.sub(lambda m: values[m.group(0)[1:-1]], template)


def render_input_first(task: Task) -> str:
    """A demonstration block: ``Task:``, then ``Example N`` with ``Input:`` (if any) and ``Output:``."""
    parts = [f"Task: {one_line(task.instruction)}"]
    for n, inst in enumerate(task.instances, start=1):
        parts.append(f"Example {n}")
        if inst.input.strip():
            parts.append(f"Input: {inst.input.strip()}")
        parts.append(f"Output: {inst.output.strip()}")
        parts.append("")
    return "\n".join(parts)


def render_output_first(task: Task) -> str:
    """A demonstration block for a classification task: ``Example N``, ``Class label:``, then ``Input:``.

    The ``Example N`` headers are what make the shared stop sequence (``Example 6``) end an output-first
    completion too; without them a base model writes label after label until ``max_tokens``.
    """
    parts = [f"Task: {one_line(task.instruction)}"]
    for n, inst in enumerate(task.instances, start=1):
        parts.append(f"Example {n}")
        parts.append(f"Class label: {inst.output.strip()}")
        if inst.input.strip():
            parts.append(f"Input: {inst.input.strip()}")
        parts.append("")
    return "\n".join(parts)


# -- parsing ---------------------------------------------------------------------------------------------

_ITEM_SPLIT = re.compile(r"\n[ \t]*\d+[ \t]*[.)][ \t]*")


def parse_instructions(text: str, *, truncated: bool) -> list[str]:
    """Split a continuation of the numbered list into instructions.

    The prompt ended with ``9.``, so ``text`` starts with the ninth item; later items follow their own
    number. Whitespace inside an item is collapsed. When the completion was cut off at ``max_tokens``
    (``truncated``), its last item is incomplete and dropped.

    >>> parse_instructions(" Name a fruit that is red.\\n10. Add 2 and 3.\\n11. Descri", truncated=True)
    ['Name a fruit that is red.', 'Add 2 and 3.']
    """
    items = [one_line(item) for item in _ITEM_SPLIT.split("\n" + text.lstrip(" \t"))]
    # The split leaves an empty head when the completion itself begins on a new numbered line.
    items = [item for item in items if item]
    if truncated and items:
        items.pop()
    return items


def parse_classification(text: str) -> bool | None:
    """``Yes`` -> True, ``No`` -> False, anything else -> None (the caller counts it and treats it as No).

    >>> parse_classification(" Yes"), parse_classification("no."), parse_classification("Maybe")
    (True, False, None)
    """
    word = re.match(r"\s*([A-Za-z]+)", text)
    if word is None:
        return None
    answer = word.group(1).lower()
    if answer == "yes":
        return True
    if answer == "no":
        return False
    return None


_NO_INPUT = {"", "none", "n/a", "na", "<noinput>", "no input", "(none)", "null", "-"}
_EXAMPLE_HEADER = re.compile(r"^[ \t]*Example[ \t]+\d+[ \t]*:?[ \t]*$", re.MULTILINE)
_INPUT_MARK = re.compile(r"^[ \t]*Input[ \t]*:", re.MULTILINE)
_OUTPUT_MARK = re.compile(r"^[ \t]*Output[ \t]*:", re.MULTILINE)
_LABEL_MARK = re.compile(r"^[ \t]*Class label[ \t]*:", re.MULTILINE)
# Marker lines that end a field: an output ends where another Input:/Output: begins (the model started a new
# example without its header); an output-first input ends at an Output: line, which that format never has.
_ENDS_OUTPUT = re.compile(r"^[ \t]*(?:Input|Output|Class label|Task)[ \t]*:", re.MULTILINE)
_ENDS_INPUT = re.compile(r"^[ \t]*(?:Output|Class label|Task)[ \t]*:", re.MULTILINE)


def _clean_input(text: str) -> str:
    text = text.strip()
    return "" if text.lower().strip(".") in _NO_INPUT else text


def _field(block: str, start: int, ends: re.Pattern[str]) -> tuple[str, bool]:
    """The text of the field starting at ``start``, up to the next marker line matched by ``ends``; and
    whether such a stray marker cut it short.

    >>> _field("4\nOutput: 5", 0, _ENDS_OUTPUT)
    ('4', True)
    """
    nxt = ends.search(block, start)
    if nxt is None:
        return block[start:].strip(), False
    return block[start : nxt.start()].strip(), True


@dataclass(frozen=True, slots=True)
class ParsedInstances:
    """Instances read from one completion. ``unparseable`` counts blocks with no recognisable Output /
    Class label; ``stray`` counts fields that a misplaced marker line cut short (its text is dropped)."""

    instances: list[Instance]
    unparseable: int
    stray: int = 0


def parse_input_first(text: str, *, truncated: bool) -> ParsedInstances:
    """Read ``Example N`` / ``Input:`` / ``Output:`` blocks. A cut-off last block is dropped.

    An output ends at the next marker line: a second ``Output:`` (or an ``Input:``, ``Class label:``,
    ``Task:``) inside one example is not part of the answer; it is cut off and counted as ``stray``.

    >>> parse_input_first("Example 1\nInput: 2+2\nOutput: 4\n\nExample 2\nOutput: 7", truncated=False)
    ParsedInstances(instances=[Instance(input='2+2', output='4'), Instance(input='', output='7')], \
unparseable=0, stray=0)
    """
    blocks = [b for b in _EXAMPLE_HEADER.split(text) if b.strip()]
    if truncated and blocks:
        blocks.pop()
    instances: list[Instance] = []
    bad = stray = 0
    for block in blocks:
        out = _OUTPUT_MARK.search(block)
        if out is None:
            bad += 1
            continue
        inp = _INPUT_MARK.search(block, 0, out.start())
        input_text = block[inp.end() : out.start()] if inp else ""
        output_text, cut = _field(block, out.end(), _ENDS_OUTPUT)
        stray += cut
        instances.append(Instance(_clean_input(input_text), output_text))
    return ParsedInstances(instances, bad, stray)


def parse_output_first(text: str, *, truncated: bool) -> ParsedInstances:
    """Read ``Class label:`` / ``Input:`` blocks (each may start with ``Example N``) into instances whose
    output is the label. An input ends at an ``Output:`` (or ``Task:``) line, which this format never has:
    ``Output: 1000`` after an input is not part of that input; it is cut off and counted as ``stray``.

    >>> text = "Example 1\nClass label: Spam\nInput: Win now\n\nExample 2\nClass label: Ham\nInput: Hi"
    >>> parse_output_first(text, truncated=False).instances
    [Instance(input='Win now', output='Spam'), Instance(input='Hi', output='Ham')]
    """
    text = _EXAMPLE_HEADER.sub("", text)
    marks = list(_LABEL_MARK.finditer(text))
    bad = 1 if not marks and text.strip() else 0
    blocks = [text[m.end() : (marks[i + 1].start() if i + 1 < len(marks) else len(text))] for i, m in enumerate(marks)]
    if truncated and blocks:
        blocks.pop()
    instances: list[Instance] = []
    stray = 0
    for block in blocks:
        inp = _INPUT_MARK.search(block)
        label, cut = _field(block[: inp.start()] if inp else block, 0, _ENDS_INPUT)
        label = one_line(label)
        if not label:
            bad += 1
            continue
        stray += cut
        if inp is None:
            instances.append(Instance("", label))
            continue
        input_text, cut = _field(block, inp.end(), _ENDS_INPUT)
        stray += cut
        instances.append(Instance(_clean_input(input_text), label))
    return ParsedInstances(instances, bad, stray)
