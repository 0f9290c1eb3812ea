"""ColBERT's evaluate stage: base, without_pooling and pooling_aware at every pool factor (and on each NanoBEIR
collection), the mining report beside them, and the NDCG@10-by-pool-factor plot."""

from __future__ import annotations

import json

import polars as pl

from retrieval_pipeline.core.family import Scores
from retrieval_pipeline.families.colbert import Colbert


def evaluate(family: Colbert, scores: dict[str, Scores]) -> None:
    labels = [label for label in family.labels if label in scores]  # the plot's columns in a fixed order
    metrics: dict = {"mining": json.loads((family.paths.mined / "mining_report.json").read_text())}
    for label in labels:
        metrics[label] = scores[label].metrics["test"]
        for name, by_method in scores[label].metrics["nanobeir"].items():
            metrics.setdefault("nanobeir", {}).setdefault(name, {})[label] = by_method
    evaluate_params = family.params.evaluate
    first_method = evaluate_params.methods[0]
    plot = "pool_factor," + ",".join(labels) + "\n" + "".join(
        f"{pf}," + ",".join(f"{metrics[label][first_method][f'pf_{pf}']['ndcg@10']:.6f}" for label in labels)
        + "\n" for pf in sorted(evaluate_params.pool_factors))
    per_query = pl.concat([scores[label].tables["per_query"] for label in labels])
    family.write_evaluation(metrics, {"per_query": per_query}, {"ndcg_by_pool_factor": plot})
    for label in labels:
        for method, by_factor in metrics[label].items():
            print(f"evaluate: {label:16s} {method:12s} " + "  ".join(
                f"PF{key[3:]} {values['ndcg@10']:.4f}" for key, values in by_factor.items()))
