"""The reranker's candidate pools, built by the mine stage: the first stage's ranking of each query's candidates
(its judged context, or the whole corpus of a retrieval collection), the rows each query keeps (its top-k
candidates, and for training queries each positive with hard and easy negatives), and their feature tokens."""

from __future__ import annotations

import numpy as np
import polars as pl

from retrieval_pipeline.core.beir import Collection
from retrieval_pipeline.core.retrieval import search
from retrieval_pipeline.families.reranker.features import (
    EntityExtractor,
    SentenceFeatures,
    entity_density,
    hops,
    is_causal,
    rhetorical_role,
)
from retrieval_pipeline.families.reranker.params import FeatureParams


def score_judged(encoder, collection: Collection, batch_size: int) -> pl.DataFrame:
    """The cosine of every document judged for a query (its context's sentences) under the first-stage bi-encoder,
    each text encoded once, and its rank within the query's candidates."""
    sentences = collection.qrels.join(collection.queries.rename({"text": "query"}), on="query_id",
                                      maintain_order="left").join(
        collection.corpus.rename({"text": "sentence"}), on="document_id", maintain_order="left").select(
        "query_id", "query", pl.col("document_id").alias("sentence_id"), "sentence", pl.col("relevance").alias("label"),
        "split")
    unique_sentences = sentences["sentence"].unique(maintain_order=True).to_list()
    unique_queries = sentences["query"].unique(maintain_order=True).to_list()
    sentence_vectors = encoder.encode(unique_sentences, batch_size=batch_size, normalize_embeddings=True,
                                      convert_to_numpy=True, show_progress_bar=True)
    query_vectors = encoder.encode(unique_queries, batch_size=batch_size, normalize_embeddings=True,
                                   convert_to_numpy=True, show_progress_bar=True)
    sentence_index = {text: i for i, text in enumerate(unique_sentences)}
    query_index = {text: i for i, text in enumerate(unique_queries)}
    s = np.array([sentence_index[text] for text in sentences["sentence"]])
    q = np.array([query_index[text] for text in sentences["query"]])
    scores = (sentence_vectors[s] * query_vectors[q]).sum(axis=1)
    return sentences.with_columns(first_stage_score=pl.Series(scores, dtype=pl.Float32)).with_columns(
        first_stage_rank=pl.col("first_stage_score").rank("ordinal", descending=True).over("query_id"))


def retrieve(encoder, collection: Collection, candidates: int, batch_size: int) -> pl.DataFrame:
    """Each judged query's first-stage top documents over the whole corpus (faiss over normalised
    embeddings), as rows like the sentence layout's; training queries also get their relevant documents the
    first stage missed, ranked after the list, so every training query has its positives."""
    queries = collection.judged_queries()
    corpus_ids, texts = collection.corpus["document_id"].to_list(), collection.corpus["text"].to_list()
    encode = lambda items: encoder.encode(items, batch_size=batch_size, normalize_embeddings=True,  # noqa: E731
                                          convert_to_numpy=True, show_progress_bar=True)
    documents, questions = encode(texts), encode(queries["text"].to_list())
    scores, indices = search(questions, documents, candidates)
    relevant = {(query, document) for query, document, grade in
                collection.qrels.select("query_id", "document_id", "relevance").iter_rows() if grade > 0}
    position = {document: i for i, document in enumerate(corpus_ids)}
    rows = []
    for q, (query_id, query, split) in enumerate(queries.select("query_id", "text", "split").iter_rows()):
        found = [corpus_ids[i] for i in indices[q]]
        missed = [document for (owner, document) in sorted(relevant) if owner == query_id
                  and document not in found] if split == "train" else []
        extra = [float(questions[q] @ documents[position[document]]) for document in missed]
        for rank, (document, score) in enumerate(zip(found + missed, [*scores[q].tolist(), *extra]), start=1):
            rows.append({"query_id": query_id, "query": query, "sentence_id": document,
                         "sentence": texts[position[document]], "label": int((query_id, document) in relevant),
                         "split": split, "first_stage_score": score, "first_stage_rank": rank})
    return pl.DataFrame(rows, schema_overrides={"first_stage_score": pl.Float32, "first_stage_rank": pl.UInt32})


def select_pool(scored: pl.DataFrame, candidates: int, hard: int, easy: int, rng: np.random.Generator) -> pl.DataFrame:
    """The rows each query needs: its first-stage top-k (`candidate`, what evaluation reranks) and, for training
    queries, each positive with `hard` top-ranked non-evidence sentences and `easy` random ones (`train_pair`)."""
    kept = []
    for _, group in scored.sort("first_stage_rank").group_by("query_id", maintain_order=True):
        n_positive = int(group["label"].sum())
        negatives = group.filter(pl.col("label") == 0)
        hard_ids = negatives["sentence_id"].head(hard * n_positive).to_list()
        rest = negatives["sentence_id"].slice(len(hard_ids)).to_list()
        easy_ids = [rest[i] for i in rng.permutation(len(rest))[:easy * n_positive]] if rest else []
        is_train = group["split"][0] == "train"
        pair = (pl.when(pl.col("label") == 1).then(pl.lit("positive"))
                .when(pl.col("sentence_id").is_in(hard_ids)).then(pl.lit("hard"))
                .when(pl.col("sentence_id").is_in(easy_ids)).then(pl.lit("easy")).otherwise(None))
        group = group.with_columns(pair=pair, candidate=pl.col("first_stage_rank") <= candidates)
        group = group.with_columns(train_pair=pl.lit(is_train) & pl.col("pair").is_not_null())
        kept.append(group.filter(pl.col("candidate") | pl.col("train_pair")))
    return pl.concat(kept).sort("query_id", "first_stage_rank")


def with_features(pool: pl.DataFrame, extract: EntityExtractor, features: FeatureParams) -> pl.DataFrame:
    queries = pool["query"].unique(maintain_order=True).to_list()
    query_entities = dict(zip(queries, extract(queries)))
    sentence_entities = extract(pool["sentence"].to_list())
    pool = pool.with_columns(entities=pl.Series(sentence_entities, dtype=pl.List(pl.String)))
    hop_column = []
    for _, group in pool.group_by("query_id", maintain_order=True):
        hop_column += hops(query_entities[group["query"][0]], group["entities"].to_list(), features.max_hop)
    # group_by keeps each query's rows contiguous in their original order, as the pool is sorted by query
    tokens = [SentenceFeatures(hop, rhetorical_role(sentence), tuple(names[:features.max_entities]),
                               is_causal(sentence),
                               entity_density(sentence, names) >= features.reasoning_entity_density).tokens()
              for hop, sentence, names in zip(hop_column, pool["sentence"], pool["entities"])]
    return pool.with_columns(hop=pl.Series(hop_column, dtype=pl.Int32),
                             feature_tokens=pl.Series(tokens, dtype=pl.String))
