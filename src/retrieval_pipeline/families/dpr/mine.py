"""DPR's mine stage: for each training claim, the first BM25 candidate and the first dense candidate (base towers)
that are not its evidence and score below (1 - relative_margin) of it."""

from __future__ import annotations

import polars as pl

from retrieval_pipeline.core.collection import load_collection
from retrieval_pipeline.core.io import atomic_directory
from retrieval_pipeline.core.retrieval import search
from retrieval_pipeline.families.dpr import Dpr
from retrieval_pipeline.families.dpr.towers import base_towers


def mine(family: Dpr) -> None:
    import bm25s

    params = family.params.mine
    collection = load_collection(family.paths.prepared)
    train, corpus = collection.pairs("train"), collection.corpus
    texts, ids = corpus["text"].to_list(), corpus["document_id"].to_list()
    position = {pid: i for i, pid in enumerate(ids)}
    positives = [position[pid] for pid in train["document_id"]]
    k = min(params.top_k, len(texts))

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    bm25_indices, bm25_scores = retriever.retrieve(bm25s.tokenize(train["query"].to_list(), stopwords="en",
                                                                  show_progress=False), k=k, show_progress=False)
    base = base_towers(family)
    passages = base["document"].encode(texts, batch_size=params.batch_size, convert_to_numpy=True,
                                       show_progress_bar=True)
    queries = base["query"].encode(train["query"].to_list(), batch_size=params.batch_size, convert_to_numpy=True,
                                   show_progress_bar=True)
    dense_scores, dense_indices = search(queries, passages, k)
    positive_dense = (queries * passages[positives]).sum(axis=1)

    def first_negative(indices, scores, positive, positive_score):
        for index, score in zip(indices, scores):
            if index != positive and score < (1 - params.relative_margin) * positive_score:
                return texts[index], float(score)
        return None, None

    rows = []
    for row, positive in enumerate(positives):
        bm25_lookup = dict(zip(bm25_indices[row].tolist(), bm25_scores[row].tolist()))
        bm25_positive = bm25_lookup.get(positive, float(bm25_scores[row][0]))
        bm25_negative, bm25_score = first_negative(bm25_indices[row], bm25_scores[row], positive, bm25_positive)
        dense_negative, dense_score = first_negative(dense_indices[row], dense_scores[row], positive,
                                                     float(positive_dense[row]))
        rows.append({"query": train["query"][row], "positive": train["document"][row],
                     "bm25_negative": bm25_negative, "bm25_negative_score": bm25_score,
                     "bm25_positive_score": bm25_positive, "dense_negative": dense_negative,
                     "dense_negative_score": dense_score, "dense_positive_score": float(positive_dense[row])})
    mined = pl.DataFrame(rows)
    with atomic_directory(family.paths.mined) as out:
        mined.write_parquet(out / "hard_negatives.parquet")
    print(f"mine: hard negatives for {mined['bm25_negative'].count()} (bm25) and "
          f"{mined['dense_negative'].count()} (dense) of {train.height} claims")
