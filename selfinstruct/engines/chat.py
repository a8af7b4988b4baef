"""The prompt shape of chat models: a short sequence of role/content messages.

A prompt for a completions model is a ``str``; a prompt for a chat model is a :data:`Chat`, a tuple of
:class:`ChatMessage` (a tuple, so a request holding one stays hashable and immutable). Backends look at the
type of each prompt: the OpenAI backend sends a ``Chat`` to ``/v1/chat/completions`` and a ``str`` to
``/v1/completions``; in-process vLLM renders a ``Chat`` to text with the model's own chat template
(:func:`render_chat`), exactly what ``vllm.LLM.chat`` does before generating.

This module only describes and converts messages; it sends nothing and imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One turn of a chat: ``role`` is ``system``, ``user`` or ``assistant``."""

    role: str
    content: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown chat role {self.role!r}: expected one of {', '.join(ROLES)}")

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


Chat: TypeAlias = tuple[ChatMessage, ...]
Prompt: TypeAlias = "str | Chat"


def user_chat(content: str, system: str | None = None) -> Chat:
    """A one-question chat: an optional system message, then ``content`` as the user's message.

    >>> [m.role for m in user_chat("Hi", system="Be brief.")]
    ['system', 'user']
    """
    messages = [ChatMessage("system", system)] if system else []
    messages.append(ChatMessage("user", content))
    return tuple(messages)


def is_chat(prompt: object) -> bool:
    """Whether ``prompt`` is a chat (a tuple of messages) rather than completion text."""
    return isinstance(prompt, tuple) and all(isinstance(m, ChatMessage) for m in prompt)


def to_openai(chat: Iterable[ChatMessage]) -> list[dict[str, str]]:
    """The ``messages`` field of an OpenAI chat-completions request body."""
    return [m.to_dict() for m in chat]


def prompt_text(prompt: str | Chat) -> str:
    """Plain text of a prompt, for logs, hashing and test fakes: a chat's messages joined by blank lines."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(m.content for m in prompt)


def fold_system(chat: Sequence[ChatMessage]) -> Chat:
    """The same chat without a system message: its text leads the first user message instead.

    Some chat templates (Gemma 1 and 2) refuse a system role; folding keeps the instructions.

    >>> fold_system(user_chat("Hi", system="Be brief."))
    (ChatMessage(role='user', content='Be brief.\\n\\nHi'),)
    """
    system = "\n\n".join(m.content for m in chat if m.role == "system")
    rest = [m for m in chat if m.role != "system"]
    if not system:
        return tuple(rest)
    if rest and rest[0].role == "user":
        rest[0] = ChatMessage("user", f"{system}\n\n{rest[0].content}")
    else:
        rest.insert(0, ChatMessage("user", system))
    return tuple(rest)


class ChatTokenizer(Protocol):
    """The part of a Hugging Face tokenizer that renders chats (what vLLM's ``LLM.get_tokenizer()`` gives)."""

    chat_template: Any

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


class NoChatTemplate(Exception):
    """The model's tokenizer has no chat template: it is a base model, not a chat model."""


def continues_reply(chat: Sequence[ChatMessage]) -> bool:
    """Whether ``chat`` ends with an assistant message that the model is to continue (a prefilled reply)
    rather than answer: the chat form of a completion prompt.

    >>> continues_reply((ChatMessage("user", "List three."), ChatMessage("assistant", "1. One\\n2.")))
    True
    >>> continues_reply(user_chat("List three."))
    False
    """
    return bool(chat) and chat[-1].role == "assistant"


def render_chat(tokenizer: ChatTokenizer, chat: Sequence[ChatMessage]) -> str:
    """The text a chat model sees for ``chat``: the tokenizer's chat template with the generation prompt
    added (the assistant turn opened), as ``vllm.LLM.chat`` renders it. A chat that ends with an assistant
    message is rendered with that message left open instead (``continue_final_message``), so the model
    writes on from its last word (:func:`continues_reply`). A template that rejects the system role gets the
    system text folded into the first user message. Raises :class:`NoChatTemplate` when the tokenizer has
    none.
    """
    return str(_apply(tokenizer, chat, tokenize=False))


def chat_token_ids(tokenizer: ChatTokenizer, chat: Sequence[ChatMessage]) -> list[int]:
    """Token ids of :func:`render_chat`'s text, as the template makes them: given to an engine as ids, the
    template's own BOS is not doubled by the engine adding another when it tokenizes text."""
    ids = _apply(tokenizer, chat, tokenize=True)
    if isinstance(ids, Mapping) or hasattr(ids, "input_ids"):  # a BatchEncoding (newer transformers)
        ids = ids["input_ids"]
    if ids and isinstance(ids[0], list):  # a batch of one
        ids = ids[0]
    return [int(i) for i in ids]


def _apply(tokenizer: ChatTokenizer, chat: Sequence[ChatMessage], *, tokenize: bool) -> Any:
    if not getattr(tokenizer, "chat_template", None):
        raise NoChatTemplate("the model's tokenizer has no chat template")
    # A prefilled reply stays open (the template's end-of-turn cut off after it); else the reply is opened.
    opening: dict[str, bool] = (
        {"add_generation_prompt": False, "continue_final_message": True}
        if continues_reply(chat)
        else {"add_generation_prompt": True}
    )
    try:
        return tokenizer.apply_chat_template(to_openai(chat), tokenize=tokenize, **opening)
    except Exception:  # jinja2's TemplateError ("System role not supported"), raised by the template
        if not any(m.role == "system" for m in chat):
            raise
        folded = to_openai(fold_system(chat))
        return tokenizer.apply_chat_template(folded, tokenize=tokenize, **opening)


__all__ = [
    "ROLES",
    "Chat",
    "ChatMessage",
    "ChatTokenizer",
    "NoChatTemplate",
    "Prompt",
    "chat_token_ids",
    "continues_reply",
    "fold_system",
    "is_chat",
    "prompt_text",
    "render_chat",
    "to_openai",
    "user_chat",
]
