"""Token pooling for late-interaction models, inside training and at inference: the recipe author's k-means
(`kmeans`), this project's deterministic Lloyd's k-means (`kmeans_lloyd`) and pylate's hierarchical pooling."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch


def cluster_means(tokens: torch.Tensor, assignment: torch.Tensor, clusters: int) -> torch.Tensor:
    """Mean of the tokens in each cluster; differentiable with respect to the tokens."""
    sums = torch.zeros(clusters, tokens.shape[1], dtype=tokens.dtype, device=tokens.device)
    sums = sums.index_add(0, assignment, tokens)
    counts = torch.bincount(assignment, minlength=clusters).clamp(min=1).to(tokens.dtype)
    return sums / counts.unsqueeze(1)


def _fill_empty_clusters(assignment: torch.Tensor, distance: torch.Tensor, clusters: int) -> torch.Tensor:
    """Give each empty cluster the worst-fitting token of a cluster that can spare one."""
    counts = torch.bincount(assignment, minlength=clusters)
    for empty in torch.nonzero(counts == 0).flatten().tolist():
        spare = counts[assignment] > 1
        candidate = torch.where(spare, distance, torch.full_like(distance, float("-inf"))).argmax()
        counts[assignment[candidate]] -= 1
        assignment[candidate] = empty
        counts[empty] = 1
        distance[candidate] = float("-inf")
    return assignment


def kmeans_assign(tokens: torch.Tensor, clusters: int, iterations: int) -> torch.Tensor:
    """Lloyd's k-means on one document's tokens (no gradient): a cluster index per token, every cluster used.

    Centroids start at evenly spaced tokens, so the result is deterministic.
    """
    points = tokens.detach().float()
    start = torch.linspace(0, len(points) - 1, clusters, device=points.device).round().long()
    centroids = points[start]
    assignment = torch.zeros(len(points), dtype=torch.long, device=points.device)
    for _ in range(max(iterations, 1)):
        # ||x - c||^2 without the ||x||^2 term, which is the same for every centroid
        distance = (centroids * centroids).sum(dim=1) - 2 * points @ centroids.T
        nearest, assignment = distance.min(dim=1)
        assignment = _fill_empty_clusters(assignment, nearest, clusters)
        centroids = cluster_means(points, assignment, clusters)
    return assignment


def recipe_kmeans_schedule(tokens: int, pool_factor: int) -> tuple[int, int]:
    """The recipe author's cluster count and iteration budget for `tokens` poolable tokens: max(tokens // pool
    factor, 1) clusters, and max(min(12 + ceil(6 log2 r), 50), 20) iterations for r tokens per cluster."""
    clusters = max(tokens // pool_factor, 1)
    ratio = max(tokens / clusters, 1.0)
    return clusters, max(min(12 + math.ceil(6 * math.log2(max(ratio, 2))), 50), 20)


def recipe_kmeans_labels(points: np.ndarray, clusters: int, iterations: int, backend: str, seed: int) -> np.ndarray:
    """A cluster per point from the library k-means the recipe author's pooling calls, on the CPU, seeded, with its
    tolerance of 1e-4."""
    if backend == "sklearn":
        from sklearn.cluster import KMeans

        return KMeans(n_clusters=clusters, random_state=seed, max_iter=iterations, tol=1e-4).fit_predict(points)
    from fastkmeans import FastKMeans

    kmeans = FastKMeans(points.shape[1], clusters, niter=iterations, tol=1e-4, gpu=False, verbose=False, seed=seed,
                        device="cpu", use_triton=False)
    kmeans.train(points)
    return kmeans.predict(points)


def recipe_kmeans_pool(tokens: torch.Tensor, pool_factor: int, protected: int, backend: str,
                       seed: int) -> torch.Tensor:
    """The recipe author's k-means pooling (stefan-jo/pylate, ColBERT.pool_embeddings_kmeans): the first
    `protected` tokens unchanged, the others clustered (recipe_kmeans_schedule) without gradient and each non-empty
    cluster replaced by its mean, which keeps the gradient to its tokens."""
    rest = tokens[protected:]
    if pool_factor == 1 or len(rest) <= 1:
        return tokens
    clusters, iterations = recipe_kmeans_schedule(len(rest), pool_factor)
    labels = recipe_kmeans_labels(rest.detach().float().cpu().numpy(), clusters, iterations, backend, seed)
    assignment = torch.as_tensor(np.asarray(labels, dtype=np.int64), device=rest.device)
    used = torch.unique(assignment)  # a cluster left empty is dropped, as the recipe's pooling does
    return torch.cat([tokens[:protected], cluster_means(rest, assignment, clusters)[used]])


def kmeans_pool(tokens: torch.Tensor, pool_factor: int, iterations: int, protected: int = 0) -> torch.Tensor:
    """ceil(n / pool_factor) vectors for a document's n token embeddings: its first `protected` tokens
    unchanged (pylate protects the [CLS] token the same way), then k-means cluster means of the rest."""
    clusters = math.ceil(len(tokens) / pool_factor)
    if pool_factor == 1 or clusters >= len(tokens):
        return tokens
    protected = min(protected, clusters - 1)
    rest, pooled_clusters = tokens[protected:], clusters - protected
    means = cluster_means(rest, kmeans_assign(rest, pooled_clusters, iterations), pooled_clusters)
    return torch.cat([tokens[:protected], means])


def hierarchical_pool(tokens: torch.Tensor, pool_factor: int, protected: int = 1) -> torch.Tensor:
    """pylate's hierarchical pooling (Ward linkage over cosine distances, max(n // pool_factor, 1) clusters of the
    tokens after the first `protected`, each replaced by its mean), with the distances clipped at zero: pylate 1.6
    computes 1 - cosine in float32, which rounds below zero for near-identical tokens, and scipy then refuses the
    linkage ("contains negative distances")."""
    from scipy.cluster import hierarchy

    kept, rest = tokens[:protected], tokens[protected:]
    clusters = max(len(rest) // pool_factor, 1)
    if clusters >= len(rest):
        return tokens
    distance = np.clip(1 - torch.mm(rest, rest.T).numpy(), 0, None)
    linkage = hierarchy.linkage(distance[np.triu_indices(len(rest), k=1)], method="ward")
    labels = torch.from_numpy(hierarchy.fcluster(linkage, t=clusters, criterion="maxclust").astype(np.int64) - 1)
    used = torch.unique(labels)  # fcluster may return fewer clusters than asked for
    means = torch.stack([rest[labels == label].mean(dim=0) for label in used])
    return torch.cat([kept, means])


class PoolingSettings(Protocol):
    kmeans_backend: str
    kmeans_iterations: int
    protected_tokens: int


def pool_tokens(tokens: torch.Tensor, method: str, pool_factor: int, settings: PoolingSettings,
                seed: int) -> torch.Tensor:
    """One document's token vectors pooled by `method` (kmeans, kmeans_lloyd or hierarchical) at `pool_factor`."""
    if pool_factor == 1:
        return tokens
    if method == "hierarchical":
        return hierarchical_pool(tokens, pool_factor, settings.protected_tokens)
    if method == "kmeans_lloyd":
        return kmeans_pool(tokens, pool_factor, settings.kmeans_iterations, settings.protected_tokens)
    return recipe_kmeans_pool(tokens, pool_factor, settings.protected_tokens, settings.kmeans_backend, seed)


def pool_batch(embeddings: torch.Tensor, mask: torch.Tensor, pool: Callable[[torch.Tensor], torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool each document of a padded batch [N, L, d] over its unmasked tokens with `pool`; returns padded means
    and mask."""
    pooled = [pool(document[keep.bool()]) for document, keep in zip(embeddings, mask)]
    width = max(len(document) for document in pooled)
    padded = embeddings.new_zeros(len(pooled), width, embeddings.shape[-1])
    new_mask = mask.new_zeros(len(pooled), width)
    for index, document in enumerate(pooled):
        padded[index, :len(document)] = document
        new_mask[index, :len(document)] = 1
    return padded, new_mask
