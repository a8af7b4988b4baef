"""Exports as TRL sees them: its data utilities, real chat templates, and a few SFTTrainer steps.

Marked ``trainers``: needs TRL, transformers (so torch) and datasets. Install torch first and alone, or pip
fetches the CUDA build: ``pip install torch && pip install -e '.[export-test]'``. Skipped without them.

No hub access at test time, so the tokenizer is built here: a byte-level BPE (every byte is a token, no
merges, so decoding gives back the exact text) carrying the chat templates that TRL ships in
``trl/chat_templates`` (the published templates of Gemma, Qwen, Phi-3, Llama 3...). The model for the trainer
steps is a randomly initialised two-layer Qwen2 of a few thousand parameters: the point is that TRL takes
the export as it is and puts the loss on the assistant's tokens, not what the model learns.
"""

from __future__ import annotations

import importlib.resources
import math
from pathlib import Path
from typing import Any

import pytest
from exportsets import POOL_TASKS, write_pool

from selfinstruct.views.export import ExportOptions, export_pool

pytestmark = pytest.mark.trainers
HINT = "trainer checks need TRL: pip install torch first (alone), then pip install -e '.[export-test]'"
trl = pytest.importorskip("trl", reason=HINT)
transformers = pytest.importorskip("transformers", reason=HINT)
datasets = pytest.importorskip("datasets", reason=HINT)
from trl.data_utils import is_conversational, maybe_apply_chat_template  # noqa: E402

SYSTEM = "Answer in as few words as you can."
# The special tokens of every template used below, so each marker is one token, as in the real tokenizers.
SPECIAL_TOKENS = [
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<start_of_turn>", "<end_of_turn>", "<|user|>",
    "<|assistant|>", "<|system|>", "<|end|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
]  # fmt: skip
TEMPLATES = ["gemma", "gemma3", "qwen2_5", "qwen3", "phi3", "llama3_1"]
NO_SYSTEM_ROLE = {"gemma"}  # Gemma 1 and 2 refuse a system message: export those without --system


def byte_tokenizer(template: str) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    core = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        additional_special_tokens=SPECIAL_TOKENS,
    )  # fmt: skip
    tokenizer.chat_template = (importlib.resources.files("trl") / "chat_templates" / f"{template}.jinja").read_text()
    return tokenizer


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, bool], Any]:
    """Each format, with and without a system prompt, exported and loaded back with ``datasets``."""
    root = tmp_path_factory.mktemp("exports")
    pool = write_pool(root / "pool")
    loaded = {}
    for fmt in ("messages", "prompt-completion", "sharegpt", "alpaca"):
        for with_system in (False, True):
            out = root / f"{fmt}-{with_system}.jsonl"
            export_pool(pool, out, ExportOptions(fmt=fmt, system=SYSTEM if with_system else None))
            loaded[fmt, with_system] = datasets.load_dataset(
                "json", data_files=str(out), split="train", cache_dir=str(root / "cache")
            )
    return loaded


def answers() -> list[tuple[str, str]]:
    """(user turn, answer) of every instance, by the export's one rule."""
    return [(t.instruction + (f"\n{i.input}" if i.input else ""), i.output) for t in POOL_TASKS for i in t.instances]


@pytest.mark.parametrize("with_system", [False, True])
def test_trl_recognises_messages_and_prompt_completion_as_conversational(exports: Any, with_system: bool) -> None:
    for fmt in ("messages", "prompt-completion"):
        rows = exports[fmt, with_system]
        assert rows.num_rows == len(answers())
        assert all(is_conversational(row) for row in rows), fmt
    # What the issue found: TRL does not take ShareGPT's from/value or Alpaca's fields as a conversation,
    # which is why messages is the default.
    for fmt in ("sharegpt", "alpaca"):
        assert not any(is_conversational(row) for row in exports[fmt, with_system])


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("with_system", [False, True])
def test_chat_templates_render_the_messages_export(exports: Any, template: str, with_system: bool) -> None:
    if with_system and template in NO_SYSTEM_ROLE:
        pytest.skip("this template has no system role")
    tokenizer = byte_tokenizer(template)
    for row, (user, answer) in zip(exports["messages", with_system], answers(), strict=True):
        text = maybe_apply_chat_template(row, tokenizer)["text"]
        assert user in text and answer in text and text.index(user) < text.rindex(answer)
        assert not with_system or SYSTEM in text
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert ids and tokenizer.decode(ids) == text


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("with_system", [False, True])
def test_chat_templates_render_the_prompt_completion_export(exports: Any, template: str, with_system: bool) -> None:
    if with_system and template in NO_SYSTEM_ROLE:
        pytest.skip("this template has no system role")
    tokenizer = byte_tokenizer(template)
    for row, (user, answer) in zip(exports["prompt-completion", with_system], answers(), strict=True):
        rendered = maybe_apply_chat_template(row, tokenizer)
        assert user in rendered["prompt"] and answer not in rendered["prompt"].replace(user, "")
        assert answer in rendered["completion"] and user not in rendered["completion"]
        assert tokenizer(rendered["completion"], add_special_tokens=False)["input_ids"]


def tiny_model(vocab_size: int) -> Any:
    config = transformers.Qwen2Config(
        vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=512,
    )  # fmt: skip
    transformers.set_seed(0)
    return transformers.Qwen2ForCausalLM(config)


def train(dataset: Any, tmp_path: Path, **config: Any) -> Any:
    tokenizer = byte_tokenizer("qwen2_5")
    args = trl.SFTConfig(
        output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=4, logging_steps=1,
        save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, max_length=512, **config,
    )  # fmt: skip
    trainer = trl.SFTTrainer(
        model=tiny_model(len(tokenizer)), args=args, train_dataset=dataset, processing_class=tokenizer
    )
    trained = [tokenizer.decode([t for t in row["labels"] if t != -100]) for row in trainer.train_dataset]
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    return trained


def test_sft_trainer_trains_on_the_assistant_turns_of_a_datasets_directory(tmp_path: Path) -> None:
    pool = write_pool(tmp_path / "pool")
    export_pool(pool, tmp_path / "chat", ExportOptions(validation_size=2, system=SYSTEM))
    splits = datasets.load_from_disk(str(tmp_path / "chat"))
    trained = train(splits["train"], tmp_path, assistant_only_loss=True)
    expected = [row["messages"][-1]["content"] for row in splits["train"]]
    for labels, answer, row in zip(trained, expected, splits["train"], strict=True):
        assert answer in labels and row["messages"][1]["content"] not in labels and SYSTEM not in labels


def test_sft_trainer_puts_the_loss_on_the_completion(tmp_path: Path) -> None:
    pool = write_pool(tmp_path / "pool")
    export_pool(pool, tmp_path / "pc.parquet", ExportOptions(fmt="prompt-completion"))
    rows = datasets.load_dataset("parquet", data_files=str(tmp_path / "pc.parquet"), split="train",
                                 cache_dir=str(tmp_path / "cache"))  # fmt: skip
    trained = train(rows, tmp_path)  # TRL turns completion_only_loss on for prompt-completion data
    for labels, (user, answer) in zip(trained, answers(), strict=True):
        assert answer in labels and user not in labels
