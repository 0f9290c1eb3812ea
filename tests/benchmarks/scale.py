"""One size of the ColBERT scale benchmark, in its own process so that its peak memory is its own.

python tests/benchmarks/scale.py <documents> [--library-centroids] prints one JSON line: the seconds to encode the
generated corpus (documents of about 100 tokens, built from the synthetic register's sentences) with the embedded
profile's base ColBERT, to search it exactly (block-wise MaxSim, 100 queries, top 100), to build a PLAID index over
it as the colbert family does (centroids from `evaluate.index.centroid_sample` documents) and to search that, the
index's recall of the exact top 10 and top 100, and the process's peak resident memory. With --library-centroids
the index is also built the way the family built it before (fast-plaid's own centroid count from the whole
collection, 4-bit residuals), and timed and scored beside it.
"""

from __future__ import annotations

import json
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

QUERIES, TOP_K, WORDS = 100, 100, 80  # ~80 words make ~100 word pieces
BEFORE_NBITS = 4  # the family's `evaluate.index.nbits` before issue 26, in the build it is compared with


def corpus(size: int, seed: int = 0) -> tuple[list[str], list[str]]:
    from retrieval_pipeline.core.world import build_world
    from retrieval_pipeline.families.colbert.synthetic import claim_collection

    documents, claims, _ = claim_collection(build_world(seed, 200, 20), 3, seed)
    sentences = [sentence for row in documents for sentence in row["text"].split(". ")]
    rng = random.Random(seed)
    texts = []
    for _ in range(size):
        words: list[str] = []
        while len(words) < WORDS:
            words += rng.choice(sentences).split()
        texts.append(" ".join(words[:WORDS]))
    return texts, [claim["text"] for claim in claims[:QUERIES]]


def build_and_search(documents: list[torch.Tensor], queries: list[torch.Tensor], exact: list[list[int]],
                     index, seed: int, library_centroids: bool) -> dict:
    """Seconds to build (as the colbert family does, or as it did before) and to search, the number of centroids
    and bits per residual dimension, and the share of each query's exact top 10 and top 100 the index returns."""
    from fast_plaid import search as fast_plaid

    from retrieval_pipeline.families.colbert.search import build_index

    scratch = Path(tempfile.mkdtemp(prefix="scale-index-"))
    try:
        plaid = fast_plaid.FastPlaid(index=str(scratch / "plaid"), device="cpu")
        nbits = BEFORE_NBITS if library_centroids else index.nbits
        start = time.perf_counter()
        if library_centroids:
            torch.manual_seed(seed)
            plaid.create(documents_embeddings=documents, nbits=nbits, kmeans_niters=index.kmeans_iterations,
                         seed=seed, use_triton_kmeans=False)
        else:
            build_index(plaid, documents, index, seed)
        result = {"index_s": time.perf_counter() - start, "nbits": nbits}
        result["centroids"] = len(np.load(scratch / "plaid" / "centroids.npy", allow_pickle=False))
        start = time.perf_counter()
        found = plaid.search(queries_embeddings=queries, top_k=TOP_K, n_full_scores=index.n_full_scores,
                             n_ivf_probe=index.n_ivf_probe, show_progress=False)
        result["search_s"] = time.perf_counter() - start
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    approximate = [[document for document, _ in row] for row in found]
    for depth in (10, 100):
        result[f"recall@{depth}"] = float(np.mean([len(set(e[:depth]) & set(a[:depth])) / depth
                                                   for e, a in zip(exact, approximate)]))
    return result


def main(size: int, library_centroids: bool) -> dict:
    from retrieval_pipeline.core.resolve import load_family
    from retrieval_pipeline.families.colbert.model import colbert_of_model_base
    from retrieval_pipeline.families.colbert.search import maxsim_search

    root = Path(__file__).resolve().parents[2]
    family = load_family("colbert", root / "params.yaml", root)
    params = family.params
    texts, questions = corpus(size)
    model = colbert_of_model_base(family)
    timings = {"documents": size}
    start = time.perf_counter()
    documents = [torch.as_tensor(v) for v in model.encode(texts, is_query=False, batch_size=64,
                                                           show_progress_bar=False)]
    timings["encode_s"] = time.perf_counter() - start
    queries = [torch.as_tensor(v) for v in model.encode(questions, is_query=True, batch_size=64,
                                                         show_progress_bar=False)]
    timings["vectors_per_document"] = sum(len(d) for d in documents) / size
    start = time.perf_counter()
    exact = maxsim_search(queries, documents, TOP_K).tolist()
    timings["exact_search_s"] = time.perf_counter() - start
    index = params.evaluate.index
    # untimed: the first create() of a process loads libtorch into fast-plaid's Rust extension (seconds), a
    # constant that would otherwise land on whichever build runs first
    build_and_search(documents[:200], queries, exact, index, params.seed, library_centroids=True)
    timings["family"] = build_and_search(documents, queries, exact, index, params.seed, library_centroids=False)
    if library_centroids:
        timings["library"] = build_and_search(documents, queries, exact, index, params.seed, library_centroids=True)
    timings["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return timings


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), "--library-centroids" in sys.argv[2:])))
