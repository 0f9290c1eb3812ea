"""The reranker's evaluate stage: every checkpoint and the first stage, per dataset, in one metrics tree."""

from __future__ import annotations

from retrieval_pipeline.core.family import Scores, concat_tables
from retrieval_pipeline.families.reranker import DATASETS, FIRST_STAGE, VARIANTS, Reranker


def print_summary(metrics: dict) -> None:
    for dataset in DATASETS:
        first = metrics["first_stage"][dataset]
        print(f"evaluate: {dataset:8s} first stage          NDCG@10 {first['ndcg@10']:.4f}  MAP {first['map']:.4f}  "
              f"MRR@10 {first['mrr@10']:.4f}")
        for variant in VARIANTS.values():
            for stage, by_dataset in metrics.get(variant, {}).items():
                m = by_dataset[dataset]
                print(f"evaluate: {dataset:8s} {variant:8s} {stage}  NDCG@10 {m['ndcg@10']:.4f}  MAP {m['map']:.4f}  "
                      f"MRR@10 {m['mrr@10']:.4f}  F1 {m['f1']:.4f} at {m['threshold']:.3f}  AUC {m['auc']:.4f}")


def evaluate(family: Reranker, scores: dict[str, Scores]) -> None:
    metrics: dict = {FIRST_STAGE: scores[FIRST_STAGE].metrics}
    for label, result in scores.items():
        if label != FIRST_STAGE:
            variant, stage = label.split("/")
            metrics.setdefault(variant, {})[stage] = result.metrics
    family.write_evaluation(metrics, {"per_query": concat_tables(scores, "per_query"),
                                      "scores": concat_tables(scores, "scores")})
    print_summary(metrics)
