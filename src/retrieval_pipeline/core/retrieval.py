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


def bounded_corpus(corpus, judged, size: int, seed: int):
    """The documents a dev evaluation searches: every judged one plus a fixed, seeded sample of the others, `size`
    in all (or just the judged ones, if they are more), so that evaluating every epoch does not grow with the
    corpus. The test evaluation searches the whole corpus."""
    import polars as pl

    judged = pl.Series(list(set(judged)), dtype=corpus["document_id"].dtype)
    kept = corpus.filter(pl.col("document_id").is_in(judged.implode()))
    others = corpus.filter(~pl.col("document_id").is_in(judged.implode()))
    room = max(size - kept.height, 0)
    if room < others.height:
        others = others.sample(n=room, seed=seed)
    return pl.concat([kept, others]).sort("document_id")
