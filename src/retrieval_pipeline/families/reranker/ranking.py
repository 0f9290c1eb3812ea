"""Ranking and classification metrics of the reranker's candidate lists, and the baseline stage: the first
stage's own ranking of each dataset's test candidate lists, scored as every checkpoint is."""

from __future__ import annotations

import numpy as np
import polars as pl

from retrieval_pipeline.core.collection import load_collection
from retrieval_pipeline.core.errors import DataError
from retrieval_pipeline.core.evaluation import evaluate_run, query_rows
from retrieval_pipeline.core.family import Scores
from retrieval_pipeline.families.reranker import DATASETS, FIRST_STAGE, Reranker

# Recall@100 is the share of the relevant documents inside the list (mine.candidates long), the same for the first
# stage and every checkpoint: reordering cannot change it. Every family reports it beside NDCG@10.
RANKING_METRICS = {"ndcg@10": "ndcg@10", "map": "map@1000", "mrr@10": "mrr@10", "recall@100": "recall@100"}


def ranking(frame: pl.DataFrame, score: str, qrels) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """NDCG@10, MAP, MRR@10 and Recall@100 of each query's candidate list ordered by `score` (ties by first-stage
    rank)."""
    ordered = frame.sort(["query_id", score, "first_stage_rank"], descending=[False, True, False])
    run = {query_id: group["sentence_id"].to_list()
           for (query_id,), group in ordered.group_by("query_id", maintain_order=True)}
    judged = {query: qrels[query] for query in run}
    means, per_query = evaluate_run(run, judged, cutoffs=(100,), map_k=1000)
    pick = lambda values: {name: values[source] for name, source in RANKING_METRICS.items()}  # noqa: E731
    return pick(means), {query: pick(values) for query, values in per_query.items()}


def best_f1_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold with the highest F1 (a sentence at or above it is called relevant)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision),
                   where=precision + recall > 0)[:-1]
    return float(thresholds[int(np.argmax(f1))])


def classification(labels: np.ndarray, scores: np.ndarray, threshold: float, what: str,
                   remedy: str) -> dict[str, float]:
    """F1 at `threshold` and ROC AUC over sentences; `remedy` says which params to change when the labels leave
    nothing to classify."""
    from sklearn.metrics import f1_score, roc_auc_score

    if len(set(labels.tolist())) < 2:
        raise DataError(f"{what}: every sentence has label {labels[0]}; expected positives and negatives for AUC "
                        f"({remedy})")
    return {"f1": float(f1_score(labels, scores >= threshold)), "auc": float(roc_auc_score(labels, scores))}


def candidate_lists(family: Reranker, split: str) -> tuple[dict[str, pl.DataFrame], dict[str, dict]]:
    """Each dataset's candidate lists (the first stage's top-k) for the queries of `split`, and all their
    positives."""
    lists = {dataset: pl.read_parquet(family.paths.mined / f"{dataset}.parquet")
             .filter((pl.col("split") == split) & pl.col("candidate")) for dataset in DATASETS}
    qrels = {dataset: load_collection(family.paths.prepared / dataset).split(split)[1] for dataset in DATASETS}
    return lists, qrels


def baseline(family: Reranker) -> dict[str, Scores]:
    """The first stage's own ranking of the candidate lists: what reranking is measured against."""
    test, qrels = candidate_lists(family, "test")
    metrics, rows = {}, []
    for dataset, frame in test.items():
        metrics[dataset], per_query = ranking(frame, "first_stage_score", qrels[dataset])
        rows += query_rows(FIRST_STAGE, per_query, dataset=dataset)
    return {FIRST_STAGE: Scores(metrics, {"per_query": pl.DataFrame(rows)})}
