"""Late-interaction (MaxSim) search over token vectors: exact, a block of documents at a time, or through a PLAID
index for corpora too large to score exhaustively."""

from __future__ import annotations

import contextlib
import functools
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from retrieval_pipeline.core.models import device


class PlaidSettings(Protocol):
    nbits: int
    kmeans_iterations: int
    centroid_sample: int
    n_ivf_probe: int
    n_full_scores: int


def maxsim_search(queries: list[torch.Tensor], documents: list[torch.Tensor], k: int, query_block: int = 16,
                  document_block: int = 512) -> np.ndarray:
    """Exhaustive late-interaction search: each query's top-k documents by the sum over its tokens of the best
    similarity in the document. Documents are padded and scored a block at a time, keeping a running top-k, so
    memory grows with the block, not with the corpus."""
    k = min(k, len(documents))
    best_scores = torch.full((len(queries), 0), float("-inf"))
    best_ids = torch.zeros((len(queries), 0), dtype=torch.long)
    for first in range(0, len(documents), document_block):
        block = documents[first:first + document_block]
        padded = torch.nn.utils.rnn.pad_sequence(block, batch_first=True)
        mask = torch.nn.utils.rnn.pad_sequence([torch.ones(len(d), dtype=torch.bool) for d in block], batch_first=True)
        scores = []
        for start in range(0, len(queries), query_block):
            chunk = queries[start:start + query_block]
            tokens = torch.nn.utils.rnn.pad_sequence(chunk, batch_first=True)
            real = torch.nn.utils.rnn.pad_sequence([torch.ones(len(q)) for q in chunk], batch_first=True)
            similarity = torch.einsum("qtd,nld->qntl", tokens, padded).masked_fill(~mask[None, :, None, :],
                                                                                   float("-inf"))
            scores.append((similarity.max(dim=-1).values * real[:, None, :]).sum(dim=-1))
        candidates = torch.cat([best_scores, torch.cat(scores)], dim=1)
        ids = torch.cat([best_ids, torch.arange(first, first + len(block)).expand(len(queries), -1)], dim=1)
        best_scores, order = candidates.topk(min(k, candidates.shape[1]), dim=1)
        best_ids = ids.gather(1, order)
    return best_ids.numpy()


def centroid_count(documents: list[torch.Tensor], sample: int) -> int:
    """fast-plaid's own rule for the number of centroids, 2^floor(log2(16 * sqrt(token vectors))), applied to the
    token vectors of a `sample` of documents rather than of the whole collection: the same count as fast-plaid's up
    to `sample` documents, fixed above."""
    sampled = min(sample, len(documents))
    tokens = sum(len(document) for document in documents) * sampled / len(documents)
    return 2 ** math.floor(math.log2(16 * math.sqrt(tokens)))


@contextlib.contextmanager
def centroids_from_sample(count: int) -> Iterator[None]:
    """fast-plaid's create() sizes its k-means from the whole collection (about 16 * sqrt(token vectors) centroids)
    and does not pass on compute_kmeans' `num_partitions`. Its compression then scores every token vector against
    every centroid in half precision, slow on a CPU, and the build grows as tokens^1.5 (docs/scale.md). For the
    length of one create(), its compute_kmeans gets the count taken from the sample, which keeps the build linear
    in the collection."""
    from fast_plaid.search import fast_plaid as library

    compute_kmeans = library.compute_kmeans
    library.compute_kmeans = functools.partial(compute_kmeans, num_partitions=count)
    try:
        yield
    finally:
        library.compute_kmeans = compute_kmeans


def build_index(plaid, documents: list[torch.Tensor], index: PlaidSettings, seed: int) -> None:
    """Build `plaid` (a fast-plaid index) over `documents`, its centroids from `index.centroid_sample` documents."""
    torch.manual_seed(seed)  # fast-plaid draws its k-means sample from torch's global generator
    with centroids_from_sample(centroid_count(documents, index.centroid_sample)):
        plaid.create(documents_embeddings=documents, nbits=index.nbits, kmeans_niters=index.kmeans_iterations,
                     n_samples_kmeans=index.centroid_sample, seed=seed, use_triton_kmeans=False)


@contextlib.contextmanager
def plaid_index(documents: list[torch.Tensor], index: PlaidSettings, scratch: Path, seed: int) -> Iterator:
    """A PLAID index (fast-plaid, which pylate's PLAID index wraps) over `documents`, built in `scratch` and
    deleted on leaving: token vectors compressed against centroids trained on the token vectors of
    `centroid_sample` documents."""
    from fast_plaid import search as fast_plaid

    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        plaid = fast_plaid.FastPlaid(index=str(scratch), device=device())
        build_index(plaid, documents, index, seed)
        yield plaid
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def search_plaid(plaid, queries: list[torch.Tensor], k: int, index: PlaidSettings) -> np.ndarray:
    """Each query's top-k document positions from a built PLAID index: candidate documents from the `n_ivf_probe`
    nearest centroids of each query token, the best `n_full_scores` of them scored with their decompressed
    vectors (padded with -1 where it returns fewer)."""
    found = plaid.search(queries_embeddings=queries, top_k=k, n_full_scores=index.n_full_scores,
                         n_ivf_probe=index.n_ivf_probe, show_progress=False)
    return np.array([[document for document, _ in row] + [-1] * (k - len(row)) for row in found])


def plaid_search(queries: list[torch.Tensor], documents: list[torch.Tensor], k: int, index: PlaidSettings,
                 scratch: Path, seed: int) -> np.ndarray:
    """Approximate late-interaction search through a PLAID index built for these queries, then deleted."""
    with plaid_index(documents, index, scratch, seed) as plaid:
        return search_plaid(plaid, queries, k, index)
