"""The reranker's candidate pools, built by the mine stage: the first stage's ranking of each query's candidates
(its judged context, or the whole corpus of a retrieval collection), the rows each query keeps (its top-k
candidates, and for training and dev queries its positives with hard and easy negatives, by the rule
`mine.negatives` names), and their feature tokens."""

from __future__ import annotations

import numpy as np
import polars as pl

from retrieval_pipeline.core.collection import Collection
from retrieval_pipeline.core.retrieval import search
from retrieval_pipeline.families.reranker.features import EntityExtractor, hops, sentence_features
from retrieval_pipeline.families.reranker.params import FeatureParams, NegativeParams


def similarities(encoder, queries: list[str], vectors: np.ndarray, rows: np.ndarray, prefix: str,
                 batch_size: int) -> np.ndarray:
    """The cosine of each row's query, with `prefix` before it, and its document (`vectors[rows[1]]`): how similar
    a sentence is to the query when negatives are chosen by similarity."""
    encoded = encoder.encode([prefix + query for query in queries], batch_size=batch_size, normalize_embeddings=True,
                             convert_to_numpy=True, show_progress_bar=True)
    return (encoded[rows[0]] * vectors[rows[1]]).sum(axis=1)


def score_judged(encoder, collection: Collection, batch_size: int, prefix: str) -> pl.DataFrame:
    """The cosine of every document judged for a query (its context's sentences) under the first-stage bi-encoder,
    each text encoded once, its rank within the query's candidates, and its `similarity` to the query with `prefix`
    before it."""
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
    similarity = similarities(encoder, unique_queries, sentence_vectors, np.stack([q, s]), prefix, batch_size)
    return sentences.with_columns(first_stage_score=pl.Series(scores, dtype=pl.Float32),
                                  similarity=pl.Series(similarity, dtype=pl.Float32)).with_columns(
        first_stage_rank=pl.col("first_stage_score").rank("ordinal", descending=True).over("query_id"))


def retrieve(encoder, collection: Collection, candidates: int, batch_size: int, prefix: str) -> pl.DataFrame:
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
    rows, pairs = [], []
    for q, (query_id, query, split) in enumerate(queries.select("query_id", "text", "split").iter_rows()):
        found = [corpus_ids[i] for i in indices[q]]
        missed = [document for (owner, document) in sorted(relevant) if owner == query_id
                  and document not in found] if split == "train" else []
        extra = [float(questions[q] @ documents[position[document]]) for document in missed]
        for rank, (document, score) in enumerate(zip(found + missed, [*scores[q].tolist(), *extra]), start=1):
            rows.append({"query_id": query_id, "query": query, "sentence_id": document,
                         "sentence": texts[position[document]], "label": int((query_id, document) in relevant),
                         "split": split, "first_stage_score": score, "first_stage_rank": rank})
            pairs.append((q, position[document]))
    similarity = similarities(encoder, queries["text"].to_list(), documents, np.array(pairs).T, prefix, batch_size)
    frame = pl.DataFrame(rows, schema_overrides={"first_stage_score": pl.Float32, "first_stage_rank": pl.UInt32})
    # score_judged's column order, so that a collection's pairs stack with LongRAG's (the replay variant mixes them)
    return frame.with_columns(similarity=pl.Series(similarity, dtype=pl.Float32)).select(
        *frame.columns[:-1], "similarity", "first_stage_rank")


def negatives_per_positive(group: pl.DataFrame, hard: int, easy: int, rng: np.random.Generator) -> tuple[list, list]:
    """For every positive, `hard` of the first stage's top-ranked non-evidence sentences and `easy` random ones."""
    n_positive = int(group["label"].sum())
    negatives = group.filter(pl.col("label") == 0).sort("first_stage_rank")
    hard_ids = negatives["sentence_id"].head(hard * n_positive).to_list()
    rest = negatives["sentence_id"].slice(len(hard_ids)).to_list()
    easy_ids = [rest[i] for i in rng.permutation(len(rest))[:easy * n_positive]] if rest else []
    return hard_ids, easy_ids


def negatives_matching_positives(group: pl.DataFrame, hard_share: float, easy: str) -> tuple[list, list]:
    """The recipe's code: as many negatives as positives, int(hard_share x positives) of them the most similar to
    the query and the others easy: the least similar, or spread evenly over the rest of the similarity ranking."""
    n_positive = int(group["label"].sum())
    ranked = group.filter(pl.col("label") == 0).sort("similarity", descending=True, maintain_order=True)
    ids = ranked["sentence_id"].to_list()
    n_hard = int(n_positive * hard_share)
    n_easy = n_positive - n_hard
    hard_ids = ids[:n_hard]
    if easy == "least_similar":
        easy_ids = ids[-n_easy:] if n_easy else []
    else:
        tail = ids[n_hard:]
        easy_ids = [tail[i] for i in np.linspace(0, len(tail) - 1, n_easy).astype(int)] if tail and n_easy else []
    return hard_ids, [sentence for sentence in dict.fromkeys(easy_ids) if sentence not in hard_ids]


def select_pool(scored: pl.DataFrame, candidates: int, negatives: NegativeParams, dataset: str,
                seed: int) -> pl.DataFrame:
    """The rows each query needs: its first-stage top-k (`candidate`, what evaluation reranks) and, for training
    and dev queries, its positives with their negatives (`train_pair`, `pair` naming each: positive, hard, easy),
    the training queries' random draws from a generator of their own."""
    draws = {split: np.random.default_rng(seed + offset) for offset, split in enumerate(("train", "dev"))}
    kept = []
    for _, group in scored.sort("first_stage_rank").group_by("query_id", maintain_order=True):
        split = group["split"][0]
        if negatives.rule == "match_positives":
            hard_ids, easy_ids = negatives_matching_positives(group, negatives.hard_share,
                                                              getattr(negatives.easy, dataset))
        elif split in draws:
            hard_ids, easy_ids = negatives_per_positive(group, negatives.hard_per_positive,
                                                        negatives.easy_per_positive, draws[split])
        else:
            hard_ids, easy_ids = [], []
        pair = (pl.when(pl.col("label") == 1).then(pl.lit("positive"))
                .when(pl.col("sentence_id").is_in(hard_ids)).then(pl.lit("hard"))
                .when(pl.col("sentence_id").is_in(easy_ids)).then(pl.lit("easy")).otherwise(None))
        group = group.with_columns(pair=pair, candidate=pl.col("first_stage_rank") <= candidates)
        group = group.with_columns(train_pair=pl.lit(split in draws) & pl.col("pair").is_not_null())
        kept.append(group.filter(pl.col("candidate") | pl.col("train_pair")))
    return pl.concat(kept).sort("query_id", "first_stage_rank")


def with_features(pool: pl.DataFrame, extract: EntityExtractor, features: FeatureParams) -> pl.DataFrame:
    queries = pool["query"].unique(maintain_order=True).to_list()
    query_entities = dict(zip(queries, extract(queries)))
    sentence_entities = extract(pool["sentence"].to_list())
    pool = pool.with_columns(entities=pl.Series(sentence_entities, dtype=pl.List(pl.String)))
    hop_column = []
    for _, group in pool.group_by("query_id", maintain_order=True):
        hop_column += [0] * group.height if features.hop == "constant" else hops(
            query_entities[group["query"][0]], group["entities"].to_list(), features.max_hop)
    # group_by keeps each query's rows contiguous in their original order, as the pool is sorted by query
    tokens = [sentence_features(sentence, names, hop, features).tokens()
              for hop, sentence, names in zip(hop_column, pool["sentence"], pool["entities"])]
    return pool.with_columns(hop=pl.Series(hop_column, dtype=pl.Int32),
                             feature_tokens=pl.Series(tokens, dtype=pl.String))
