"""Exact nearest-neighbour search over normalised embeddings with faiss."""

from __future__ import annotations

import faiss
import numpy as np


def truncate_and_normalise(embeddings: np.ndarray, dim: int) -> np.ndarray:
    """The first `dim` coordinates, rescaled to unit length so inner product is cosine."""
    if dim > embeddings.shape[1]:
        raise ValueError(f"cannot truncate {embeddings.shape[1]}-dim embeddings to {dim} dims")
    truncated = np.ascontiguousarray(embeddings[:, :dim], dtype=np.float32)
    norms = np.linalg.norm(truncated, axis=1, keepdims=True)
    return truncated / np.clip(norms, 1e-12, None)


def search(queries: np.ndarray, documents: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores and document indices of each query's top_k documents by inner product, best first."""
    index = faiss.IndexFlatIP(documents.shape[1])
    index.add(np.ascontiguousarray(documents, dtype=np.float32))
    scores, indices = index.search(np.ascontiguousarray(queries, dtype=np.float32), min(top_k, documents.shape[0]))
    return scores, indices
