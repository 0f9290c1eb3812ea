"""Exact nearest-neighbour search over normalised embeddings with faiss: a batch of queries at once (evaluation),
or an index that answers one query at a time (serving)."""

from __future__ import annotations

from collections.abc import Callable

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
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    return dense_index(documents).search(queries, min(top_k, documents.shape[0]))


def dense_index(vectors: np.ndarray) -> faiss.IndexFlatIP:
    """An exact inner-product index over `vectors`."""
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def dense_index_bytes(index: faiss.IndexFlatIP) -> int:
    """What the index stores: one code (the float32 vector) per document."""
    return index.sa_code_size() * index.ntotal


def dense_answer(encode: Callable[[str], np.ndarray], index: faiss.IndexFlatIP, top_k: int) -> Callable[[str], object]:
    """Answer one query: encode it (a 1 x dim array) and search the index for its top_k documents."""
    k = min(top_k, index.ntotal)
    return lambda query: index.search(np.ascontiguousarray(encode(query), dtype=np.float32), k)


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
