"""Ranking metrics and per-query scores, one place for every family: a family ranks its held-out queries its own
way (dense search, MaxSim, a reranked list) and hands the run here, which scores each query and lays the scores
out in the one table layout the report reads.

The metrics are trec_eval's, computed by pytrec_eval (trec_eval's own C code, the definitions IR papers report
with) through a registry: each name a family reports (`ndcg@10`, `mrr@10`, `map@100`, `accuracy@k`,
`precision@k`, `recall@k`) maps to a trec_eval measure. A run maps each query id to its ranked document ids (best
first); qrels map each query id to {document id: graded relevance}, where relevance above 0 means relevant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytrec_eval

Run = Mapping[str, Sequence[str]]
Qrels = Mapping[str, Mapping[str, int]]

DEFAULT_CUTOFFS = (1, 3, 5, 10)

# metric name (before its @k) -> trec_eval's measure and the key pytrec_eval reports it under ({k} its cutoff)
REGISTRY = {
    "ndcg": ("ndcg_cut.{k}", "ndcg_cut_{k}"),
    "map": ("map_cut.{k}", "map_cut_{k}"),
    "accuracy": ("success.{k}", "success_{k}"),
    "precision": ("P.{k}", "P_{k}"),
    "recall": ("recall.{k}", "recall_{k}"),
}
RECIPROCAL_RANK = "mrr"  # trec_eval's recip_rank has no cutoff: it is computed over the run cut to k


def metric_names(cutoffs: Sequence[int] = DEFAULT_CUTOFFS, ndcg_k: int = 10, mrr_k: int = 10,
                 map_k: int = 100) -> list[str]:
    """The metrics a family reports, in the order its tables show them."""
    return [f"ndcg@{ndcg_k}", f"mrr@{mrr_k}", f"map@{map_k}",
            *(f"{name}@{k}" for k in cutoffs for name in ("accuracy", "precision", "recall"))]


def trec_scores(run: Run, qrels: Qrels, metrics: Sequence[str]) -> dict[str, dict[str, float]]:
    """Each judged query's `metrics`, from pytrec_eval. The run's order is what counts: its documents get descending
    scores, so trec_eval ranks them as given."""
    judged = {str(query): {str(document): int(grade) for document, grade in relevant.items()}
              for query, relevant in qrels.items()}
    ranked = {str(query): list(map(str, documents)) for query, documents in run.items() if str(query) in judged}
    measures: dict[str, str] = {}
    cut_for_rank: int | None = None
    for metric in metrics:
        name, k = metric.split("@")
        if name == RECIPROCAL_RANK:
            cut_for_rank = int(k)
        else:
            measure, key = REGISTRY[name]
            measures[metric] = (measure.format(k=k), key.format(k=k))
    scores: dict[str, dict[str, float]] = {query: {} for query in ranked}
    if measures:
        evaluator = pytrec_eval.RelevanceEvaluator(judged, {measure for measure, _ in measures.values()})
        reported = evaluator.evaluate(as_scored(ranked))
        for query, values in reported.items():
            scores[query].update({metric: values[key] for metric, (_, key) in measures.items()})
    if cut_for_rank is not None:
        evaluator = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"})
        cut = {query: documents[:cut_for_rank] for query, documents in ranked.items()}
        for query, values in evaluator.evaluate(as_scored(cut)).items():
            scores[query][f"{RECIPROCAL_RANK}@{cut_for_rank}"] = values["recip_rank"]
    return scores


def as_scored(run: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float]]:
    return {query: {document: float(len(documents) - rank) for rank, document in enumerate(documents)}
            for query, documents in run.items() if documents}


def evaluate_run(run: Run, qrels: Qrels, cutoffs: Sequence[int] = DEFAULT_CUTOFFS, ndcg_k: int = 10,
                 mrr_k: int = 10, map_k: int = 100) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Mean metrics over the judged queries (those with a relevant document), and each one's own metrics for paired
    tests. A judged query missing from the run, or with an empty ranking, scores zero, as with trec_eval -c."""
    judged = [query for query, relevant in qrels.items() if any(grade > 0 for grade in relevant.values())]
    if not judged:
        raise ValueError("no query has a relevant document; cannot compute ranking metrics")
    names = metric_names(cutoffs, ndcg_k, mrr_k, map_k)
    scores = trec_scores({query: run[query] for query in judged if query in run},
                         {query: qrels[query] for query in judged}, names)
    per_query = {query: {name: scores.get(str(query), {}).get(name, 0.0) for name in names} for query in judged}
    means = {name: sum(values[name] for values in per_query.values()) / len(per_query) for name in names}
    return means, per_query


def query_rows(label: str, per_query: Mapping[str, Mapping[str, float]], **setting) -> list[dict]:
    """A model's per-query scores as rows of the table every evaluate stage writes and the report reads: `model`,
    the setting's columns (dim, dataset, pool factor...), `query_id`, then one column per metric."""
    return [{"model": label, **setting, "query_id": query, **values} for query, values in per_query.items()]
