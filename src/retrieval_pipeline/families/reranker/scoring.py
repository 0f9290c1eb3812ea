"""Scoring a reranker checkpoint on each dataset's test candidate lists: ranking (NDCG@10, MAP, MRR@10 of the
reordered lists) and classification (F1 at `evaluate.threshold`, a number or the one chosen on the dev queries, ROC
AUC over sentences); and, where the recipe's example-level split held training pairs out, F1 and AUC over those
pairs, the population the recipe's published F1 and AUC are measured on."""

from __future__ import annotations

import numpy as np
import polars as pl

from retrieval_pipeline.core.cross_encoders import predict_pairs
from retrieval_pipeline.core.errors import DataError
from retrieval_pipeline.core.evaluation import query_rows
from retrieval_pipeline.core.family import Scores
from retrieval_pipeline.families.reranker import DATASETS, Reranker
from retrieval_pipeline.families.reranker.features import model_input
from retrieval_pipeline.families.reranker.ranking import best_f1_threshold, candidate_lists, classification, ranking


def relevance(model, frame: pl.DataFrame, use_features: bool, batch_size: int) -> np.ndarray:
    """The checkpoint's relevance (sigmoid of its logit) of every (query, sentence) row."""
    pairs = [(model_input(query, tokens if use_features else None), sentence)
             for query, tokens, sentence in frame.select("query", "feature_tokens", "sentence").iter_rows()]
    return predict_pairs(model, pairs, batch_size)


def predict(family: Reranker, model, use_features: bool, frame: pl.DataFrame) -> np.ndarray:
    return relevance(model, frame, use_features, family.params.evaluate.batch_size)


def pair_classification(model, pairs: pl.DataFrame, use_features: bool, threshold: float,
                        batch_size: int) -> dict[str, float]:
    """F1 at `threshold` and ROC AUC over labelled pairs (the recipe's compute_metrics), and how many pairs."""
    scores = relevance(model, pairs, use_features, batch_size)
    return {**classification(pairs["label"].to_numpy(), scores, threshold, "the held-out pairs",
                             "raise train.evaluation.share"), "pairs": pairs.height}


def thresholds(family: Reranker, model, use_features: bool) -> dict[str, float]:
    """Per dataset, evaluate.threshold, or the one that maximises the checkpoint's F1 over the dev queries'
    candidates of that dataset."""
    threshold = family.params.evaluate.threshold
    if threshold != "dev":
        return {dataset: threshold for dataset in DATASETS}
    dev, _ = candidate_lists(family, "dev")
    chosen = {}
    for dataset, frame in dev.items():
        labels = frame["label"].to_numpy()
        if len(set(labels.tolist())) < 2:
            raise DataError(f"{family.key('evaluate.threshold')}: dev: the {dataset} dev queries' candidates hold "
                            f"{'no sentence' if frame.is_empty() else 'one label only'}; expected positives and "
                            f"negatives to choose the F1 threshold on (raise {family.key('data.dev_size')} and rerun "
                            "from prepare, or set the threshold to a number)")
        chosen[dataset] = best_f1_threshold(labels, predict(family, model, use_features, frame))
    return chosen


def score(family: Reranker, model, use_features: bool, label: str,
          held_out: dict[str, pl.DataFrame] | None = None) -> Scores:
    """One checkpoint's ranking and classification metrics per dataset (F1 at that dataset's threshold, which
    is reported too; `held_out_examples`, F1 and AUC over the training pairs held out from training, where
    `held_out` has them), per-query rows and pair scores."""
    test, qrels = candidate_lists(family, "test")
    chosen = thresholds(family, model, use_features)
    remedy = f"raise {family.key('mine.candidates')} or {family.key('data.test_size')}"
    metrics: dict = {}
    rows, score_frames = [], []
    for dataset, frame in test.items():
        scored = frame.with_columns(score=pl.Series(predict(family, model, use_features, frame)))
        means, per_query = ranking(scored, "score", qrels[dataset])
        means.update(classification(scored["label"].to_numpy(), scored["score"].to_numpy(), chosen[dataset],
                                    f"{dataset} test candidates", remedy))
        metrics[dataset] = {**means, "threshold": chosen[dataset]}
        if held_out and dataset in held_out:
            metrics[dataset]["held_out_examples"] = pair_classification(
                model, held_out[dataset], use_features, family.params.train.evaluation.threshold,
                family.params.evaluate.batch_size)
        rows += query_rows(label, per_query, dataset=dataset)
        score_frames.append(scored.select("query_id", "sentence_id", "label", "first_stage_score", "score")
                            .with_columns(model=pl.lit(label), dataset=pl.lit(dataset)))
    return Scores(metrics, {"per_query": pl.DataFrame(rows), "scores": pl.concat(score_frames)})
