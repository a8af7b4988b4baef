"""One sentence for every name a run records: rejection reasons, notes, surplus kinds and exit reasons.

``runs.jsonl``, ``rejected.jsonl``, the run summary and ``selfinstruct status`` show these names; this is
where each is explained (the docs' table is the same text). ``tests/test_glossary.py`` checks that every
code the library can record has an entry here.
"""

from __future__ import annotations

# Why a candidate was rejected (``rejected`` in the ledger, ``reject_reason`` in rejected.jsonl).
REASONS: dict[str, str] = {
    "too_short": "the instruction has 3 words or fewer",
    "too_long": "the instruction has more than 150 words",
    "blocked_keyword": "a blocked keyword (image, file, draw, ...): input or output a text model lacks",
    "write_a_program": "the instruction starts with 'Write a program', which the paper filtered out",
    "starts_with_punctuation": "the instruction starts with punctuation",
    "starts_with_non_ascii": "the instruction starts with a non-ASCII character",
    "too_similar": "ROUGE-L F above --threshold against a seed, a pool task or an earlier candidate",
    "no_valid_instance": "no input/output instance survived the instance filters",
    "conflicting_outputs": "the same input was given different outputs",
    "one_label": "a classification task whose instances all carry the same label",
    "demo_copy": "the candidate repeats a demonstration its prompt showed (a chat model re-listing its examples)",
    "demo_instance": "every instance was copied from a demonstration of another task",
    "low_score": "the judge scored it below --min-score",
    "no_score": "with --min-score: the judge's reply held no readable score from 1 to 5",
    "empty_instruction": "(filter command) the record's instruction is empty",
    "no_instruction": "(filter command) the record has no instruction field",
    "not_an_object": "(filter command) the line is not a JSON object",
}

# Counted along the way; a note never rejects a task by itself (``notes`` in the ledger).
NOTES: dict[str, str] = {
    "cut_off": "the last item of a completion that hit max_tokens was dropped unfinished (not a candidate)",
    "unparseable_classification": "the classification answer was neither Yes nor No; the task was treated as No",
    "unparseable_instance": "an instance block had no Output or Class label line; that instance was dropped",
    "stray_marker": "a field was cut short at a misplaced Input:/Output:/Class label: line",
    "stray_field": "an Alpaca task held a second Instruction/Input field; it was cut off there",
    "oversized_completion": "the backend cut a reply longer than max_tokens could have made",
    "chatter": "lines of a chat reply outside its list (a preamble, a closing remark), skipped",
    "unparseable_task": "an Alpaca-list block without an instruction or an output, skipped",
    "unscored_judgement": "the judge's reply held no readable score (the task is kept unless --min-score)",
    "empty_output": "an instance with an empty output was dropped",
    "output_equals_input": "an instance whose output repeats its input was dropped",
    "duplicate_instance": "an instance identical to an earlier one of the same task was dropped",
    "over_limit": "an instance beyond max_instances (default 5) was dropped",
    "copied_instance": "an instance taken verbatim from a demonstration of another task was dropped",
    "list_marker": "a bare list number or bullet with no text of its own, skipped (not a candidate)",
    "list_heading": "a chat list item that only heads a group (Analysis:), skipped (not a candidate)",
    "sub_item": "a nested bullet under a chat list item, skipped (not a candidate)",
    "relist_stopped": "a prefilled chat reply began to write one of its demonstrations again and was ended "
    "there by its stop string (no candidate lost; the copy's tokens saved)",
}

# Candidates neither accepted nor rejected (``surplus`` in the ledger).
SURPLUS: dict[str, str] = {
    "surplus": "a finished task beyond the target or --max-new, kept in rejected.jsonl, not in the pool",
    "unfinished": "its classification or instance request was cancelled when the run stopped",
}

# Why a run ended (``exit_reason`` in the ledger).
EXIT_REASONS: dict[str, str] = {
    "target_reached": "the pool holds --num-instructions tasks",
    "max_rounds": "--max-rounds rounds were sent and finished",
    "max_new": "--max-new tasks were accepted in this run",
    "time_limit": "--time-limit passed; requests in flight were cancelled, finished tasks kept",
    "saturated": "acceptance over --saturation-window rounds fell below --saturation-min-rate",
    "interrupted": "stopped by Ctrl-C (SIGINT)",
    "terminated": "stopped by SIGTERM or SIGHUP",
    "error": "a failure ended the run; its message is in the ledger's error field",
}

ALL: dict[str, str] = {**REASONS, **NOTES, **SURPLUS, **EXIT_REASONS}


def explain(name: str) -> str:
    """The sentence for ``name``, or a pointer for a name this version does not know.

    >>> explain("over_limit")
    'an instance beyond max_instances (default 5) was dropped'
    """
    return ALL.get(name, "not known to this version (recorded by another tool or version)")


__all__ = ["ALL", "EXIT_REASONS", "NOTES", "REASONS", "SURPLUS", "explain"]
