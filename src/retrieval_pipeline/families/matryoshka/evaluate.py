"""Matryoshka's evaluate stage: the base and the fine-tuned model at every dim, and the NDCG@10-by-dim plot."""

from __future__ import annotations

from retrieval_pipeline.core.family import Scores, concat_tables
from retrieval_pipeline.families.matryoshka import BASE, FINETUNED, PRIMARY_METRIC, Matryoshka


def evaluate(family: Matryoshka, scores: dict[str, Scores]) -> None:
    dims = family.params.model.dims
    metrics = {label: {key: value for key, value in result.metrics.items() if key.startswith("dim_")}
               for label, result in scores.items()}
    plot_lines = [f"dim,{BASE},{FINETUNED}"] + [
        f"{dim},{metrics[BASE][f'dim_{dim}'][PRIMARY_METRIC]:.6f},"
        f"{metrics[FINETUNED][f'dim_{dim}'][PRIMARY_METRIC]:.6f}" for dim in dims]
    family.write_evaluation(metrics, {"run": concat_tables(scores, "run"),
                                      "per_query": concat_tables(scores, "per_query")},
                            {"ndcg_by_dim": "\n".join(plot_lines) + "\n"})
    for dim in dims:
        base, tuned = (metrics[label][f"dim_{dim}"][PRIMARY_METRIC] for label in (BASE, FINETUNED))
        print(f"evaluate: dim {dim:4d}  NDCG@10 base {base:.4f} -> fine-tuned {tuned:.4f}")
