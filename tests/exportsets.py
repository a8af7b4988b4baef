"""A small pool for export tests, and checkers that restate the published rules of each consumer.

The checkers are written from the consumers' documentation, not from our exporter: OpenAI's fine-tuning
data format for chat models, LLaMA-Factory's ``dataset_info.json`` readers (alpaca: the user turn is
``instruction`` and ``input`` joined by a newline; sharegpt: an optional leading system turn, then user
and assistant turns at odd and even positions), and Axolotl's ``chat_template`` dataset keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selfinstruct.pool.directory import Pool
from selfinstruct.pool.task import Instance, Task

POOL_TASKS: list[Task] = [
    Task("Give two synonyms for 'quick'.", [Instance("", "fast, rapid")], False, "machine_task_000000", "a",
         {"source": "machine", "round": 1}),
    Task("Label the mood of the sentence as Calm or Tense.", [Instance("We waited.", "Calm"),
         Instance("The door creaked open at midnight.", "Tense")], True, "machine_task_000001", "b",
         {"source": "machine", "round": 1}),
    Task("Translate the phrase into French.", [Instance("Good morning", "Bonjour"),
         Instance("Thank you very much", "Merci beaucoup")], False, "machine_task_000002", "c",
         {"source": "machine", "round": 2}),
    Task("Write a haiku about the sea; keep {braces} and 5-7-5.", [Instance("", "Waves fold into foam\n"
         "salt wind combs the quiet dunes\nthe tide keeps its time")], False, "machine_task_000003", "d",
         {"source": "machine", "round": 2}),
    Task("Résume la phrase en un mot.", [Instance("Le café est très chaud — attention ! ☕", "Brûlant")],
         False, "machine_task_000004", "e", {"source": "machine", "round": 3}),
    Task("Is the number prime? Answer Yes or No.", [Instance("7", "Yes"), Instance("8", "No"),
         Instance("9", "No")], True, "machine_task_000005", "f", {"source": "machine", "round": 3}),
]  # fmt: skip

N_INSTANCES = sum(len(t.instances) for t in POOL_TASKS)


def write_pool(directory: Path, tasks: list[Task] | None = None) -> Path:
    pool = Pool(directory)
    with pool.lock():
        pool.append(tasks if tasks is not None else POOL_TASKS)
    return directory


# OpenAI fine-tuning, chat models: each line is {"messages": [...]}; each message has a role among these
# and string content; an example needs at least one assistant message.
OPENAI_ROLES = {"system", "user", "assistant", "tool", "function"}
OPENAI_MESSAGE_KEYS = {"role", "content", "name", "weight", "function_call", "tool_calls", "tool_call_id"}
OPENAI_TOP_KEYS = {"messages", "tools", "parallel_tool_calls", "functions"}


def openai_problems(record: Any) -> list[str]:
    """The format errors OpenAI's published checks would report for one training example."""
    if not isinstance(record, dict):
        return ["data_type"]
    problems = [f"unrecognized_key:{k}" for k in record if k not in OPENAI_TOP_KEYS]
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        return [*problems, "missing_messages_list"]
    for message in messages:
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            problems.append("message_missing_key")
            continue
        problems += [f"message_unrecognized_key:{k}" for k in message if k not in OPENAI_MESSAGE_KEYS]
        if message["role"] not in OPENAI_ROLES:
            problems.append("unrecognized_role")
        if not isinstance(message["content"], str) or not message["content"]:
            problems.append("missing_content")
    if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        problems.append("example_missing_assistant_message")
    return problems


def llamafactory_read(record: dict[str, Any], entry: dict[str, Any]) -> tuple[str, list[dict[str, str]]]:
    """Read one record the way LLaMA-Factory's documented readers do with this ``dataset_info.json`` entry:
    return (system prompt, [user, assistant] turns as role/content). Raise AssertionError where LLaMA-Factory
    would skip the example as broken."""
    columns = entry.get("columns", {})
    if entry.get("formatting", "alpaca") == "alpaca":
        parts = [record.get(columns.get("prompt", "instruction")), record.get(columns.get("query", "input"))]
        user = "\n".join(p for p in parts if p)
        system = record.get(columns["system"], "") if "system" in columns else ""
        return system or "", [
            {"role": "user", "content": user},
            {"role": "assistant", "content": record[columns.get("response", "output")]},
        ]
    tags = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
            "system_tag": "system", **entry.get("tags", {})}  # fmt: skip
    messages = list(record[columns.get("messages", "conversations")])
    role, content = tags["role_tag"], tags["content_tag"]
    system = ""
    if messages and messages[0][role] == tags["system_tag"]:
        system, messages = messages[0][content], messages[1:]
    names = {tags["user_tag"]: "user", tags["assistant_tag"]: "assistant"}
    turns = []
    for i, message in enumerate(messages):
        expected = tags["user_tag"] if i % 2 == 0 else tags["assistant_tag"]
        assert message[role] == expected, f"turn {i} has role {message[role]!r}, LLaMA-Factory wants {expected!r}"
        turns.append({"role": names[message[role]], "content": message[content]})
    assert len(turns) % 2 == 0, "LLaMA-Factory skips a conversation with an odd number of turns"
    return system, turns


# Axolotl's chat_template dataset: the keys its documentation lists for one entry of `datasets:`.
AXOLOTL_CHAT_TEMPLATE_KEYS = {
    "path", "ds_type", "split", "type", "field_messages", "message_property_mappings", "roles",
    "roles_to_train", "train_on_eos", "chat_template", "data_files",
}  # fmt: skip
