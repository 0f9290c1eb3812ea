"""Ranking metrics with trec_eval's definitions (checked against pytrec_eval in the tests).

A run maps each query id to its ranked document ids (best first); qrels map each
query id to {document id: graded relevance}, where relevance > 0 means relevant.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

Run = Mapping[str, Sequence[str]]
Qrels = Mapping[str, Mapping[str, int]]

DEFAULT_CUTOFFS = (1, 3, 5, 10)


def ndcg_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    gains = sorted((grade for grade in relevant.values() if grade > 0), reverse=True)
    ideal = sum(grade / math.log2(rank + 2) for rank, grade in enumerate(gains[:k]))
    if ideal == 0:
        return 0.0
    actual = sum(max(relevant.get(doc, 0), 0) / math.log2(rank + 2) for rank, doc in enumerate(ranked[:k]))
    return actual / ideal


def reciprocal_rank_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    for rank, doc in enumerate(ranked[:k]):
        if relevant.get(doc, 0) > 0:
            return 1.0 / (rank + 1)
    return 0.0


def average_precision_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    total_relevant = sum(1 for grade in relevant.values() if grade > 0)
    if total_relevant == 0:
        return 0.0
    hits, precision_sum = 0, 0.0
    for rank, doc in enumerate(ranked[:k]):
        if relevant.get(doc, 0) > 0:
            hits += 1
            precision_sum += hits / (rank + 1)
    return precision_sum / total_relevant


def hits_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> int:
    return sum(1 for doc in ranked[:k] if relevant.get(doc, 0) > 0)


def query_metrics(ranked: Sequence[str], relevant: Mapping[str, int],
                  cutoffs: Sequence[int] = DEFAULT_CUTOFFS, ndcg_k: int = 10, mrr_k: int = 10,
                  map_k: int = 100) -> dict[str, float]:
    """Every metric for one query: NDCG, MRR, MAP and Accuracy/Precision/Recall at each cutoff."""
    total_relevant = sum(1 for grade in relevant.values() if grade > 0)
    scores = {
        f"ndcg@{ndcg_k}": ndcg_at(ranked, relevant, ndcg_k),
        f"mrr@{mrr_k}": reciprocal_rank_at(ranked, relevant, mrr_k),
        f"map@{map_k}": average_precision_at(ranked, relevant, map_k),
    }
    for k in cutoffs:
        hits = hits_at(ranked, relevant, k)
        scores[f"accuracy@{k}"] = float(hits > 0)
        scores[f"precision@{k}"] = hits / k
        scores[f"recall@{k}"] = hits / total_relevant if total_relevant else 0.0
    return scores


def evaluate_run(run: Run, qrels: Qrels, **options) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Mean metrics over the judged queries, and each query's own metrics for paired tests.

    A judged query missing from the run scores zero, as in trec_eval with -c.
    """
    judged = [query for query, relevant in qrels.items() if any(grade > 0 for grade in relevant.values())]
    if not judged:
        raise ValueError("no query has a relevant document; cannot compute ranking metrics")
    per_query = {query: query_metrics(run.get(query, ()), qrels[query], **options) for query in judged}
    names = next(iter(per_query.values())).keys()
    means = {name: sum(scores[name] for scores in per_query.values()) / len(per_query) for name in names}
    return means, per_query
