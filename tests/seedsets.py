"""Small seed sets that tests write to disk: a few tasks in the seed schema, and the same in Alpaca form."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MINI_SEEDS: list[dict[str, Any]] = [
    {"name": "tea_steeping_time", "instruction": "How long should green tea leaves steep, and why does it matter?",
     "instances": [{"input": "", "output": "About two to three minutes in water just below boiling; longer "
                    "steeping draws out bitter tannins."}], "is_classification": False},
    {"name": "polite_decline", "instruction": "Turn the blunt message below into a polite refusal.",
     "instances": [{"input": "No, I won't cover your shift.", "output": "I'm sorry, but I can't cover your "
                    "shift this time."}], "is_classification": False},
    {"name": "review_sentiment", "instruction": "Label the customer review as Positive or Negative.",
     "instances": [{"input": "Arrived broken and support never replied.", "output": "Negative"},
                   {"input": "Sturdy, quiet and cheap. Love it.", "output": "Positive"}],
     "is_classification": True},
    {"name": "odd_or_even", "instruction": "Tell whether the number given is Odd or Even.",
     "instances": [{"input": "17", "output": "Odd"}, {"input": "40", "output": "Even"}],
     "is_classification": True},
    {"name": "three_word_summary", "instruction": "Sum up the paragraph that follows in exactly three words.",
     "instances": [{"input": "The bakery on Elm Street opened at dawn and sold out of bread by nine.",
                    "output": "Bread sold early."}], "is_classification": False},
    {"name": "packing_list_weekend", "instruction": "Suggest a packing list for a rainy weekend of camping.",
     "instances": [{"input": "", "output": "Tent with rain fly, waterproof jacket, wool socks, tarp, "
                    "headlamp, dry bags, quick-dry towel."}], "is_classification": False},
    {"name": "fix_python_bug", "instruction": "Find the bug in this Python function and correct it.",
     "instances": [{"input": "def area(r):\n    return 3.14159 * r ** r",
                    "output": "The exponent is wrong: use r ** 2.\n\ndef area(r):\n    return 3.14159 * r ** 2"}],
     "is_classification": False},
    {"name": "question_or_statement", "instruction": "Is this sentence a Question or a Statement? Reply with one word.",
     "instances": [{"input": "Where did you park", "output": "Question"}], "is_classification": True},
    {"name": "rate_word_problem", "instruction": "Solve: a cyclist rides 45 km in 1.5 hours. What is her speed?",
     "instances": [{"input": "", "output": "45 km / 1.5 h = 30 km/h."}], "is_classification": False},
    {"name": "explain_leap_year", "instruction": "Explain to a ten-year-old why some years have 366 days.",
     "instances": [{"input": "", "output": "Earth takes about 365 and a quarter days to go around the Sun, so "
                    "every four years we add a day to catch up."}], "is_classification": False},
]  # fmt: skip


def seed_records() -> list[dict[str, Any]]:
    return [{"id": f"seed_task_{i}", **task} for i, task in enumerate(MINI_SEEDS)]


def write_seeds(path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in seed_records()), encoding="utf-8")
    return path


def write_alpaca_seeds(path: Path) -> Path:
    records = [
        {"instruction": t["instruction"], "input": inst["input"], "output": inst["output"]}
        for t in MINI_SEEDS
        for inst in t["instances"][:1]
    ]
    path.write_text(json.dumps(records, indent=1), encoding="utf-8")
    return path
