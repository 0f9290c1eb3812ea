"""How much of a ColBERT distillation step the k-means pooling costs.

Compare the rows of the group: a training step with pooling (pool factor 4) by the recipe's k-means (fastkmeans)
and by this project's Lloyd's k-means, the same step without pooling, and each pooling alone on the same document
embeddings. A pooling's share of the step is its row alone over its step's.
"""

from __future__ import annotations

import pytest
import torch

from retrieval_pipeline.core.world import build_world
from retrieval_pipeline.families.colbert.losses import pooling_distillation
from retrieval_pipeline.families.colbert.model import colbert_of_model_base
from retrieval_pipeline.families.colbert.pooling import pool_batch, pool_tokens
from retrieval_pipeline.families.colbert.synthetic import claim_collection

QUERIES, N_WAYS, POOL_FACTOR = 8, 8, 4
GROUP = f"colbert train step ({QUERIES} queries x {N_WAYS} documents, embedded profile lengths)"


@pytest.fixture(scope="module")
def batch(colbert_family):
    corpus, queries, _ = claim_collection(build_world(0, 16, 4), 1, 0)
    documents = [f"{row['title']} {row['text']}" for row in corpus[:QUERIES * N_WAYS]]
    return [query["text"] for query in queries[:QUERIES]], documents


def distillation_step(colbert_family, batch, pool_factor: int, method: str = "kmeans"):
    model = colbert_of_model_base(colbert_family)
    loss = pooling_distillation(model, [pool_factor], 0, method, colbert_family.params.model.pooling,
                                colbert_family.params.train.normalize_scores)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    queries, documents = batch
    features = [model.tokenize(queries, is_query=True), model.tokenize(documents, is_query=False)]
    labels = torch.randn(QUERIES, N_WAYS, generator=torch.Generator().manual_seed(0))

    def step():
        loss(features, labels).backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


@pytest.mark.parametrize("method", ["kmeans", "kmeans_lloyd"])
@pytest.mark.benchmark(group=GROUP)
def test_step_with_kmeans_pooling(benchmark, colbert_family, batch, method):
    benchmark.pedantic(distillation_step(colbert_family, batch, POOL_FACTOR, method), rounds=3, warmup_rounds=1)


@pytest.mark.benchmark(group=GROUP)
def test_step_without_pooling(benchmark, colbert_family, batch):
    benchmark.pedantic(distillation_step(colbert_family, batch, 1), rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("method", ["kmeans", "kmeans_lloyd"])
@pytest.mark.benchmark(group=GROUP)
def test_kmeans_pooling_alone(benchmark, colbert_family, batch, method):
    model = colbert_of_model_base(colbert_family)
    features = model.tokenize(batch[1], is_query=False)
    with torch.no_grad():
        embeddings = torch.nn.functional.normalize(model(features)["token_embeddings"], dim=-1)
    settings, seed = colbert_family.params.model.pooling, colbert_family.params.seed
    pooled, mask = benchmark.pedantic(pool_batch, args=(embeddings, features["attention_mask"], lambda tokens: (
        pool_tokens(tokens, method, POOL_FACTOR, settings, seed))), rounds=5, warmup_rounds=1)
    assert mask.sum() < features["attention_mask"].sum()
