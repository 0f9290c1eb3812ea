"""Pooling-aware distillation: pylate's Distillation loss (KL between the student's and the teacher's score
distributions over each query's candidates), given a score function that first pools the documents' token
embeddings (colbert/pooling.py) at a pool factor drawn once per batch. pylate computes the embeddings, masks and
normalisation as it always does, so its own fixes reach this loss with an upgrade."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from retrieval_pipeline.families.colbert.pooling import PoolingSettings, pool_batch, pool_tokens


class PoolFactorSampler:
    """Draws a pool factor uniformly from `factors`, from its own seeded generator."""

    def __init__(self, factors: Sequence[int], seed: int) -> None:
        self.factors = list(factors)
        self.generator = np.random.default_rng(seed)

    def draw(self) -> int:
        return self.factors[int(self.generator.integers(len(self.factors)))]


class PooledScores:
    """A score metric for pylate's Distillation: each candidate document's token embeddings pooled by `method` at a
    pool factor drawn for the batch, then pylate's ColBERT scores against the queries."""

    def __init__(self, sampler: PoolFactorSampler, method: str, settings: PoolingSettings, seed: int) -> None:
        self.sampler, self.method, self.settings, self.seed = sampler, method, settings, seed
        self.last_pool_factor = 1

    def __call__(self, queries: torch.Tensor, documents: torch.Tensor, queries_mask: torch.Tensor | None = None,
                 documents_mask: torch.Tensor | None = None) -> torch.Tensor:
        from pylate.scores import colbert_kd_scores

        n_queries, n_ways = documents.shape[:2]
        self.last_pool_factor = self.sampler.draw()
        factor = self.last_pool_factor
        pooled, mask = pool_batch(documents.flatten(0, 1), documents_mask.flatten(0, 1), lambda tokens: pool_tokens(
            tokens, self.method, factor, self.settings, self.seed))
        return colbert_kd_scores(queries, pooled.view(n_queries, n_ways, *pooled.shape[1:]), queries_mask=queries_mask,
                                 documents_mask=mask.view(n_queries, n_ways, mask.shape[-1]))


def pooling_distillation(model, pool_factors: Sequence[int], seed: int, method: str, settings: PoolingSettings,
                         normalize_scores: bool):
    """pylate's Distillation loss with documents pooled by `method` at a factor drawn per batch from
    `pool_factors`, the student's scores min-max normalised per query where `normalize_scores` says so."""
    from pylate.losses import Distillation

    return Distillation(model, score_metric=PooledScores(PoolFactorSampler(pool_factors, seed), method, settings,
                                                         seed), normalize_scores=normalize_scores)
