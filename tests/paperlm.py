"""A scripted "base model" for the loopback server that answers each stage in the shapes of the paper.

``PaperLM()`` is a ``respond(prompt, body)`` function for :class:`fakelm.FakeLM`. It recognises the stage
from the prompt (a numbered list ending in ``N.``, the ``Is it classification?`` question, an instance
prompt ending in ``Task: ...``, an Alpaca one-shot list ending in ``Task N``, a judge's rubric ending in
``Score:``) and replies like a base model would, including the mess a real one makes: too-short items,
blocked keywords, copies of a demonstration, a list cut off at ``max_tokens``, unparseable classification
answers, instance blocks without an output, Alpaca tasks without an output, judge replies without a score.

Asked through the chat endpoint (``body`` holds ``messages``), it answers like an instruct model instead:
the same content wrapped in the habits of chat models (a preamble, Markdown bold and headings, a closing
remark), from the user's message of the chat templates. Asked to continue a prefilled reply (vLLM's
``continue_final_message``), it continues the numbered list in it as a base model would.

Replies depend only on the prompt and the request's ``seed``, never on call order, so runs are
deterministic whatever the thread scheduling.
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import Any

WORDS = [
    "river",
    "mountain",
    "budget",
    "recipe",
    "garden",
    "engine",
    "letter",
    "memory",
    "planet",
    "market",
    "window",
    "teacher",
    "harbor",
    "signal",
    "lantern",
    "orchard",
    "puzzle",
    "ticket",
    "castle",
    "meadow",
    "canyon",
    "violin",
    "pepper",
    "rocket",
    "bridge",
    "desert",
    "island",
    "forest",
    "candle",
    "mirror",
    "pocket",
    "silver",
    "marble",
    "thunder",
    "velvet",
    "copper",
    "meadow",
    "falcon",
    "glacier",
    "harvest",
    "compass",
    "anchor",
    "basket",
    "cabinet",
    "dolphin",
    "feather",
    "granite",
    "hammer",
    "jungle",
    "kettle",
    "ladder",
    "magnet",
    "needle",
    "oyster",
    "parrot",
    "quartz",
    "saddle",
    "tunnel",
    "umbrella",
    "wagon",
    "yogurt",
    "zipper",
    "blanket",
    "cactus",
    "diamond",
    "elbow",
    "fountain",
    "gravel",
    "helmet",
    "iceberg",
    "jacket",
    "koala",
    "lemon",
    "mango",
    "nectar",
    "olive",
    "pillow",
    "quiver",
    "ribbon",
    "saucer",
    "tablet",
    "utensil",
    "vacuum",
    "walnut",
]
VERBS = [
    "Explain",
    "Describe",
    "Summarize",
    "Compare",
    "Suggest",
    "List",
    "Classify",
    "Rewrite",
    "Outline",
    "Recommend",
    "Estimate",
    "Translate",
    "Critique",
    "Rank",
    "Propose",
    "Convert",
    "Identify",
    "Evaluate",
    "Contrast",
    "Sketch",
]


def _rng(prompt: str, body: dict[str, Any], salt: str = "") -> random.Random:
    digest = hashlib.sha256(f"{salt}|{body.get('seed')}|{prompt}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def novel_instruction(rng: random.Random) -> str:
    verb = rng.choice(VERBS)
    w = rng.sample(WORDS, 9)
    return f"{verb} the {w[0]} {w[1]} of a {w[2]} near the {w[3]} {w[4]} and {w[5]} {w[6]} {w[7]} {w[8]}."


class PaperLM:
    """Callable responder. ``cut_every``: every n-th list ends cut off at max_tokens (0: never)."""

    def __init__(self, *, cut_every: int = 3, garbage: bool = True, items: int = 6) -> None:
        self.cut_every = cut_every
        self.garbage = garbage
        self.items = items

    def __call__(self, prompt: str, body: dict[str, Any]) -> tuple[str, str]:
        if "messages" in body:
            return self.chat(prompt, body)
        if prompt.endswith("\nScore:"):
            return self.judge(prompt, body)
        if re.search(r"\nTask (\d+)\n$", prompt):
            return self.alpaca(prompt, body)
        if prompt.rstrip().endswith("Is it classification?"):
            return self.classify(prompt, body)
        if re.search(r"\n\d+\.$", prompt):
            return self.instructions(prompt, body)
        if prompt.endswith("\n") and "\nTask: " in prompt:
            return self.instances(prompt, body)
        return "I do not know what to say.", "stop"

    def instructions(self, prompt: str, body: dict[str, Any]) -> tuple[str, str]:
        rng = _rng(prompt, body, "instructions")
        start = int(re.search(r"\n(\d+)\.$", prompt).group(1))  # type: ignore[union-attr]
        demos = re.findall(r"^\d+\. (.+)$", prompt, flags=re.MULTILINE)
        items = [novel_instruction(rng) for _ in range(self.items)]
        if self.garbage:
            items[1] = "Say hi."  # too short
            items[2] = f"Describe the {rng.choice(WORDS)} in this picture of a {rng.choice(WORDS)} please."
            if demos:
                items[3] = demos[0]  # a copy of a demonstration: demo_copy
        lines = [f" {items[0]}"] + [f"{start + i}. {text}" for i, text in enumerate(items[1:], start=1)]
        text = "\n".join(lines)
        if self.cut_every and rng.randrange(self.cut_every) == 0:
            return text + f"\n{start + len(items)}. Explain the differ", "length"
        return text + "\n\n", "stop"

    def classify(self, prompt: str, body: dict[str, Any]) -> tuple[str, str]:
        instruction = prompt.rstrip().rsplit("Task: ", 1)[1]
        if self.garbage and _rng(prompt, body, "clf").randrange(10) == 0:
            return " Perhaps", "stop"
        return (" Yes" if instruction.startswith(("Classify", "Rank")) else " No"), "stop"

    def instances(self, prompt: str, body: dict[str, Any]) -> tuple[str, str]:
        rng = _rng(prompt, body, "instances")
        instruction = prompt.rstrip("\n").rsplit("Task: ", 1)[1]
        if self.garbage and rng.randrange(12) == 0:
            return "Example 1\nInput: nothing useful here\n\n", "stop"  # no output: no valid instance
        if "Class label:" in prompt:
            labels = ["Alpha", "Beta", "Gamma"]
            blocks = [f"Class label: {lab}\nInput: a {lab.lower()} case of {rng.choice(WORDS)}" for lab in labels]
            return "\n\n".join(blocks) + "\n\n", "stop"
        blocks = []
        for n in range(1, rng.randrange(2, 5)):
            a, b = rng.sample(WORDS, 2)
            blocks.append(f"Example {n}\nInput: {a} and {b}\nOutput: For '{instruction[:30]}': the {a} meets the {b}.")
        if self.garbage and rng.randrange(4) == 0:
            blocks.append(blocks[0])  # an exact duplicate instance
        return "\n\n".join(blocks) + "\n\n", "stop"

    def alpaca(self, prompt: str, body: dict[str, Any]) -> tuple[str, str]:
        """Complete tasks continuing the list: mostly novel ones, and (with ``garbage``) a copy of a
        demonstration, a task without an output, a blocked keyword, and now and then a cut-off last task."""
        rng = _rng(prompt, body, "alpaca")
        start = int(re.search(r"\nTask (\d+)\n$", prompt).group(1))  # type: ignore[union-attr]
        demos = re.findall(r"^Instruction: (.+)$", prompt, flags=re.MULTILINE)
        blocks = []
        for n in range(self.items):
            instruction = novel_instruction(rng)
            a, b = rng.sample(WORDS, 2)
            given = f"{a} and {b}" if n % 3 == 0 else "<none>"
            output = f"The {a} meets the {b}, as '{instruction[:20]}' asks."
            if self.garbage and n == 1 and demos:
                instruction = demos[0]  # a copy of a demonstration: demo_copy
            if self.garbage and n == 2:
                output = ""  # no output: unparseable
            if self.garbage and n == 3:
                instruction = f"Draw a map of the {a} {b} and label every {rng.choice(WORDS)} on it."
            blocks.append(f"Instruction: {instruction}\nInput: {given}\nOutput: {output}".rstrip())
        text = "\n\n".join(blocks[:1] + [f"Task {start + i}\n{b}" for i, b in enumerate(blocks[1:], start=1)])
        if self.cut_every and rng.randrange(self.cut_every) == 0:
            return text + f"\n\nTask {start + len(blocks)}\nInstruction: Explain why the", "length"
        return text + "\n\n", "stop"

    def judge(self, prompt: str, body: dict[str, Any]) -> tuple[str, str]:
        """A score from 1 to 5 fixed by the task's text; with ``garbage``, one reply in eight has none."""
        rng = _rng(prompt.rsplit("Instruction: ", 1)[-1], {}, "judge")
        if self.garbage and rng.randrange(8) == 0:
            return " This task looks fine to me overall", "stop"
        score = rng.randint(1, 5)
        return f" {score}\nReason: scored {score} by the scripted judge.", "stop"

    # -- as an instruct model -------------------------------------------------------------------------------

    def chat(self, prompt: str, body: dict[str, Any]) -> tuple[str, str]:
        if body.get("continue_final_message") and re.search(r"\n\d+\.$", prompt):
            return self.instructions(prompt, body)  # the demonstrations open the reply, ending in "9."
        if re.search(r"Answer in \w+ lines and nothing more", prompt):
            text, finish = self.judge(prompt, body)
            if text.startswith(" This task"):
                return "I think " + text.strip() + ".", finish
            score, reason = text.strip().split("\nReason: ", 1)
            valid = "yes" if int(score) >= 3 else "no"
            questions = f"**Instruction valid:** yes\n**Input valid:** none\n**Output valid:** {valid}"
            return f"Here is my assessment.\n\n**Score:** {score}/5\n{questions}\n**Reason:** {reason}", finish
        if re.search(r'numbered "Task \d+" to', prompt):
            count = int(re.search(r'to "Task (\d+)"', prompt).group(1))  # type: ignore[union-attr]
            text, finish = self.alpaca(prompt.rstrip() + "\n\nTask 1\n", body)
            text = re.sub(r"^(Instruction|Input|Output):", r"**\1:**", text, flags=re.MULTILINE)
            body_text = "**Task 1**\n" + re.sub(r"^Task (\d+)$", r"### Task \1", text, flags=re.MULTILINE)
            del count
            return (
                "Sure! Here are new tasks for the collection:\n\n" + body_text.rstrip() + "\n\nI hope these help!",
                finish,
            )
        if "Reply with the new requests only" in prompt:
            rng = _rng(prompt, body, "chat-instructions")
            demos = re.findall(r"^\d+\. (.+)$", prompt, flags=re.MULTILINE)
            items = [novel_instruction(rng) for _ in range(self.items)]
            if self.garbage:
                items[1] = "Say hi."
                items[2] = f"Describe the {rng.choice(WORDS)} in this picture of a {rng.choice(WORDS)} please."
                if demos:
                    items[3] = demos[0]
            lines = "\n".join(f"{i}. **{t.split(' ', 1)[0]}** {t.split(' ', 1)[1]}" for i, t in enumerate(items, 1))
            return f"Sure! Here are {len(items)} new requests:\n\n{lines}\n\nLet me know if you need more.", "stop"
        if "Is it classification? Answer with one word" in prompt:
            text, finish = self.classify(
                prompt.rsplit("\nIs it classification?", 1)[0] + "\nIs it classification?", body
            )
            word = text.strip()
            return (f"**{word}**" if word in ("Yes", "No") else "I am not sure."), finish
        if "Write up to five examples for this task" in prompt:
            instruction = prompt.split("Write up to five examples for this task, in the same format:", 1)[1]
            instruction = instruction.split("Task: ", 1)[1].split("\n", 1)[0]
            demo_part = prompt.split("Write up to five examples", 1)[0]
            base_prompt = demo_part + f"Task: {instruction}\n"
            text, finish = self.instances(base_prompt, body)
            text = re.sub(r"^(Input|Output|Class label):", r"**\1:**", text, flags=re.MULTILINE)
            text = re.sub(r"^Example (\d+)$", r"### Example \1", text, flags=re.MULTILINE)
            if "Example 1" not in text:  # output-first replies: give them headers as the format asks
                blocks = [b for b in text.split("\n\n") if b.strip()]
                text = "\n\n".join(f"### Example {i}\n{b}" for i, b in enumerate(blocks, 1))
            return "Here are the examples:\n\n" + text.strip() + "\n\nLet me know if you need more examples!", finish
        return "I'm not sure what you are asking for.", "stop"
