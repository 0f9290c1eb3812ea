"""Matryoshka's evaluate stage: the base and the fine-tuned model at every dim, and the NDCG@10-by-dim plot; on a
BEIR collection, each model's serving cost at every dim (core/serving.py)."""

from __future__ import annotations

from retrieval_pipeline.core.collection import load_collection
from retrieval_pipeline.core.family import Scores, concat_tables
from retrieval_pipeline.core.retrieval import dense_answer, dense_index, dense_index_bytes, truncate_and_normalise
from retrieval_pipeline.core.serving import record_serving, serving_row
from retrieval_pipeline.families.matryoshka import BASE, FINETUNED, PRIMARY_METRIC, Matryoshka
from retrieval_pipeline.families.matryoshka.model import load_model
from retrieval_pipeline.families.matryoshka.scoring import corpora


def serving(family: Matryoshka) -> list[dict]:
    """The base and the fine-tuned model at every dim: the corpus encoded once, truncated and indexed per dim, and
    each test query encoded and searched alone."""
    collection = load_collection(family.paths.prepared)
    queries = collection.split("test")[0]["text"].to_list()
    corpus = collection.corpus["text"].to_list()
    evaluate = family.params.evaluate
    rows = []
    for label, reference in ((BASE, family.params.model.base), (FINETUNED, str(family.paths.model))):
        model = load_model(family, reference, f"the {label} model")
        documents = model.encode(corpus, batch_size=evaluate.batch_size, convert_to_numpy=True,
                                 show_progress_bar=True)
        for dim in family.params.model.dims:
            index = dense_index(truncate_and_normalise(documents, dim))
            encode = lambda query, dim=dim, model=model: truncate_and_normalise(  # noqa: E731
                model.encode([query], convert_to_numpy=True), dim)
            rows.append(serving_row(label, label == FINETUNED, dense_answer(encode, index, evaluate.top_k), queries,
                                    dense_index_bytes(index), len(corpus), dim=dim))
    return rows


def evaluate(family: Matryoshka, scores: dict[str, Scores]) -> None:
    """Each model's metrics at every dim under each evaluation corpus's name (`rows`, `chunks`); the plot and the
    printed lines show the first corpus."""
    dims = family.params.model.dims
    views = corpora(family, load_collection(family.paths.prepared).corpus)
    metrics = {label: {view: result.metrics[view] for view in views} for label, result in scores.items()}
    shown = {label: metrics[label][views[0]] for label in (BASE, FINETUNED)}
    plot_lines = [f"dim,{BASE},{FINETUNED}"] + [
        f"{dim},{shown[BASE][f'dim_{dim}'][PRIMARY_METRIC]:.6f},"
        f"{shown[FINETUNED][f'dim_{dim}'][PRIMARY_METRIC]:.6f}" for dim in dims]
    tables = {"run": concat_tables(scores, "run"), "per_query": concat_tables(scores, "per_query")}
    if family.params.data.is_collection():
        record_serving(metrics, tables, serving(family))
    family.write_evaluation(metrics, tables, {"ndcg_by_dim": "\n".join(plot_lines) + "\n"})
    for dim in dims:
        base, tuned = (shown[label][f"dim_{dim}"][PRIMARY_METRIC] for label in (BASE, FINETUNED))
        print(f"evaluate: dim {dim:4d}  NDCG@10 base {base:.4f} -> fine-tuned {tuned:.4f} ({views[0]} corpus)")
