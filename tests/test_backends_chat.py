"""Tests for selfinstruct.engines.chat: the chat prompt shape and its rendering with a chat template."""

from __future__ import annotations

import doctest
from typing import Any

import pytest

import selfinstruct.engines.chat as chat_module
from selfinstruct.engines.chat import (
    ChatMessage,
    NoChatTemplate,
    continues_reply,
    fold_system,
    is_chat,
    prompt_text,
    render_chat,
    to_openai,
    user_chat,
)


def test_doctests() -> None:
    assert doctest.testmod(chat_module).failed == 0


def test_user_chat_and_openai_shape() -> None:
    chat = user_chat("Write a haiku.", system="Be brief.")
    assert to_openai(chat) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Write a haiku."},
    ]
    assert to_openai(user_chat("Hi")) == [{"role": "user", "content": "Hi"}]
    assert hash(chat) == hash(user_chat("Write a haiku.", system="Be brief."))  # usable as a request key


def test_unknown_role_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown chat role 'tool'"):
        ChatMessage("tool", "x")


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [("text", False), (user_chat("x"), True), ((), True), (("a",), False), ([ChatMessage("user", "x")], False)],
)
def test_is_chat(prompt: Any, expected: bool) -> None:
    assert is_chat(prompt) is expected


def test_prompt_text() -> None:
    assert prompt_text("plain") == "plain"
    assert prompt_text(user_chat("B", system="A")) == "A\n\nB"


@pytest.mark.parametrize(
    ("chat", "expected"),
    [
        (user_chat("Hi"), (ChatMessage("user", "Hi"),)),
        (user_chat("Hi", system="S"), (ChatMessage("user", "S\n\nHi"),)),
        ((ChatMessage("system", "S"),), (ChatMessage("user", "S"),)),
        (
            (ChatMessage("system", "S"), ChatMessage("assistant", "A")),
            (ChatMessage("user", "S"), ChatMessage("assistant", "A")),
        ),
    ],
)
def test_fold_system(chat: tuple[ChatMessage, ...], expected: tuple[ChatMessage, ...]) -> None:
    assert fold_system(chat) == expected


class Tokenizer:
    """A stand-in Hugging Face tokenizer with a Gemma-like template; ``system_ok=False`` refuses the system
    role the way Gemma 2's template does."""

    def __init__(self, *, template: str | None = "gemma-like", system_ok: bool = True) -> None:
        self.chat_template = template
        self.system_ok = system_ok
        self.calls: list[dict[str, Any]] = []

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> str:
        self.calls.append({"conversation": conversation, **kwargs})
        if not self.system_ok and any(m["role"] == "system" for m in conversation):
            raise RuntimeError("System role not supported")
        turns = "".join(f"<start_of_turn>{m['role']}\n{m['content']}<end_of_turn>\n" for m in conversation)
        if kwargs.get("continue_final_message"):  # as transformers does: cut after the last message's content
            return turns[: turns.rindex(conversation[-1]["content"]) + len(conversation[-1]["content"])]
        return turns + ("<start_of_turn>model\n" if kwargs.get("add_generation_prompt") else "")


def test_render_chat_opens_the_assistant_turn() -> None:
    tok = Tokenizer()
    text = render_chat(tok, user_chat("Hi"))
    assert text == "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    assert tok.calls[0]["tokenize"] is False and tok.calls[0]["add_generation_prompt"] is True


PREFILLED = (ChatMessage("user", "List four."), ChatMessage("assistant", "1. One\n2. Two\n3."))


@pytest.mark.parametrize(
    ("chat", "expected"),
    [
        (PREFILLED, True),
        (user_chat("Hi"), False),
        ((), False),
        ((ChatMessage("assistant", "Hello."), ChatMessage("user", "List four.")), False),
        ((ChatMessage("system", "Be brief."), *PREFILLED), True),
    ],
)
def test_continues_reply(chat: tuple[ChatMessage, ...], expected: bool) -> None:
    assert continues_reply(chat) is expected


def test_render_chat_leaves_a_prefilled_reply_open() -> None:
    tok = Tokenizer()
    text = render_chat(tok, PREFILLED)
    assert text == "<start_of_turn>user\nList four.<end_of_turn>\n<start_of_turn>assistant\n1. One\n2. Two\n3."
    assert tok.calls[0]["add_generation_prompt"] is False and tok.calls[0]["continue_final_message"] is True


def test_render_chat_continues_a_prefilled_reply_after_folding_the_system_role() -> None:
    tok = Tokenizer(system_ok=False)
    text = render_chat(tok, (ChatMessage("system", "Be brief."), *PREFILLED))
    assert text.startswith("<start_of_turn>user\nBe brief.\n\nList four.") and text.endswith("2. Two\n3.")
    assert tok.calls[-1]["continue_final_message"] is True


def test_render_chat_folds_a_refused_system_role() -> None:
    tok = Tokenizer(system_ok=False)
    text = render_chat(tok, user_chat("Hi", system="Be brief."))
    assert "Be brief.\n\nHi" in text and "system" not in text


def test_render_chat_reraises_other_template_errors() -> None:
    tok = Tokenizer(system_ok=False)

    def broken(conversation: Any, **kwargs: Any) -> str:
        raise RuntimeError("template bug")

    tok.apply_chat_template = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="template bug"):
        render_chat(tok, user_chat("Hi"))


@pytest.mark.parametrize("template", [None, ""])
def test_render_chat_without_a_template_is_a_base_model(template: str | None) -> None:
    with pytest.raises(NoChatTemplate):
        render_chat(Tokenizer(template=template), user_chat("Hi"))
