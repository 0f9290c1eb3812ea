"""The reranker's evaluate stage: every checkpoint and the first stage, per dataset, in one metrics tree; where the
factual dataset is a BEIR collection, the serving cost of the first stage alone and of the first stage reranked by
the recommended checkpoint (core/serving.py)."""

from __future__ import annotations

from retrieval_pipeline.core.collection import load_collection
from retrieval_pipeline.core.cross_encoders import load_cross_encoder
from retrieval_pipeline.core.family import Scores, concat_tables
from retrieval_pipeline.core.models import load_sentence_transformer
from retrieval_pipeline.core.retrieval import dense_answer, dense_index, dense_index_bytes
from retrieval_pipeline.core.serving import record_serving, serving_row
from retrieval_pipeline.families.reranker import DATASETS, FIRST_STAGE, REPLAY, VARIANTS, Reranker
from retrieval_pipeline.families.reranker.features import model_input

COLLECTION = "factual"  # the dataset `collection` replaces
# The checkpoint to serve: stage 2 with the stage-1 pairs replayed where the profile trains it, else the published
# stage 2; plain, as a feature-token model needs the mine stage's entity features at query time.
RECOMMENDED = (f"{VARIANTS[False]}/{REPLAY}", f"{VARIANTS[False]}/stage2")


def serving(family: Reranker, recommended: str) -> list[dict]:
    """The first stage (its corpus encoded once and indexed; a query encoded and searched alone) and the same with
    its `mine.candidates` documents reranked by the checkpoint. The index is the first stage's in both."""
    collection = load_collection(family.paths.prepared / COLLECTION)
    queries = collection.split("test")[0]["text"].to_list()
    corpus = collection.corpus["text"].to_list()
    mine, batch_size = family.params.mine, family.params.evaluate.batch_size
    encoder = load_sentence_transformer(mine.first_stage_model, family.key("mine.first_stage_model"))
    index = dense_index(encoder.encode(corpus, batch_size=batch_size, normalize_embeddings=True,
                                       convert_to_numpy=True, show_progress_bar=True))
    first_stage = dense_answer(lambda query: encoder.encode([query], normalize_embeddings=True, convert_to_numpy=True),
                               index, mine.candidates)
    reranker = load_cross_encoder(str(family.paths.model / recommended), f"the {recommended} checkpoint",
                                  family.params.model.max_length)

    def reranked(query: str):
        _, positions = first_stage(query)
        return reranker.predict([(model_input(query, None), corpus[i]) for i in positions[0] if i >= 0],
                                batch_size=batch_size, show_progress_bar=False)

    stored = dense_index_bytes(index)
    return [serving_row(FIRST_STAGE, False, first_stage, queries, stored, len(corpus), dataset=COLLECTION),
            serving_row(recommended, True, reranked, queries, stored, len(corpus), dataset=COLLECTION)]


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
    tables = {"per_query": concat_tables(scores, "per_query"), "scores": concat_tables(scores, "scores")}
    if getattr(family.params.data, COLLECTION).is_collection():
        record_serving(metrics, tables, serving(family, next(label for label in RECOMMENDED if label in scores)))
    family.write_evaluation(metrics, tables)
    print_summary(metrics)
