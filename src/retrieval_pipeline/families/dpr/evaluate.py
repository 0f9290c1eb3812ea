"""DPR's evaluate stage: the base and the fine-tuned towers compared, after checking the towers did not collapse."""

from __future__ import annotations

from retrieval_pipeline.core.errors import DataError
from retrieval_pipeline.core.family import Scores, concat_tables
from retrieval_pipeline.families.dpr import FINETUNED, Dpr


def check_not_collapsed(diagnostics: dict[str, float], pairs: int) -> None:
    """Stop when positive pairs no longer score above the rest: the towers have collapsed. With a single held-out
    pair the whole matrix is its diagonal, so there is nothing to compare and no verdict."""
    if pairs >= 2 and diagnostics["diagonal_cosine"] <= diagnostics["mean_cosine"]:
        raise DataError("dpr: collapse: the fine-tuned towers' mean diagonal cosine "
                        f"{diagnostics['diagonal_cosine']:.3f} "
                        f"is not above the mean cosine {diagnostics['mean_cosine']:.3f} on held-out pairs; "
                        "expected positive pairs to score far above the rest")


def evaluate(family: Dpr, scores: dict[str, Scores]) -> None:
    metrics = {label: result.metrics for label, result in scores.items()}
    check_not_collapsed(metrics[FINETUNED], scores[FINETUNED].tables["per_query"].height)
    family.write_evaluation(metrics, {"per_query": concat_tables(scores, "per_query")})
    for label, values in metrics.items():
        print(f"evaluate: {label:9s} NDCG@10 {values['ndcg@10']:.4f}  R@1 {values['recall@1']:.4f}"
              f"  R@20 {values['recall@20']:.4f}  diagonal cosine {values['diagonal_cosine']:.3f}"
              f" vs mean {values['mean_cosine']:.3f}")
