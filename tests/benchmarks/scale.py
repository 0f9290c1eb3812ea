"""One size of the ColBERT scale benchmark, in its own process so that its peak memory is its own.

python tests/benchmarks/scale.py <documents> prints one JSON line: the seconds to encode the generated corpus
(documents of about 100 tokens, built from the synthetic register's sentences) with the embedded profile's base
ColBERT, to build a PLAID index over it, to search it (exact block-wise MaxSim and PLAID, 100 queries, top 100),
and the process's peak resident memory.
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

import torch

QUERIES, TOP_K, WORDS = 100, 100, 80  # ~80 words make ~100 word pieces


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


def main(size: int) -> dict:
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
    maxsim_search(queries, documents, TOP_K)
    timings["exact_search_s"] = time.perf_counter() - start
    scratch = Path(tempfile.mkdtemp(prefix="scale-index-"))
    index = params.evaluate.index
    start = time.perf_counter()
    try:
        from fast_plaid import search as fast_plaid

        plaid = fast_plaid.FastPlaid(index=str(scratch / "plaid"), device="cpu")
        plaid.create(documents_embeddings=documents, nbits=index.nbits, kmeans_niters=index.kmeans_iterations,
                     seed=params.seed, use_triton_kmeans=False)
        timings["index_s"] = time.perf_counter() - start
        start = time.perf_counter()
        plaid.search(queries_embeddings=queries, top_k=TOP_K, n_full_scores=index.n_full_scores,
                     n_ivf_probe=index.n_ivf_probe, show_progress=False)
        timings["plaid_search_s"] = time.perf_counter() - start
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    timings["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return timings


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]))))
