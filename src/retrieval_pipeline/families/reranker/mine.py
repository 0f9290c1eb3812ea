"""The reranker's mine stage: per dataset, the first stage's candidates for every query, the training pairs (each
positive with hard and easy negatives) and every row's feature tokens."""

from __future__ import annotations

import polars as pl

from retrieval_pipeline.core.collection import load_collection
from retrieval_pipeline.core.io import atomic_directory
from retrieval_pipeline.core.models import load_sentence_transformer
from retrieval_pipeline.families.reranker import DATASETS, Reranker
from retrieval_pipeline.families.reranker.features import EntityExtractor, NerEntities, rule_extractor
from retrieval_pipeline.families.reranker.pools import retrieve, score_judged, select_pool, with_features


def entity_extractor(family: Reranker) -> EntityExtractor:
    features = family.params.mine.features
    if features.entities == "rules":
        return rule_extractor
    return NerEntities(features.ner_model, family.params.mine.batch_size, family.key("mine.features.ner_model"),
                       unique=features.rules == "project")


def mine(family: Reranker) -> None:
    params = family.params.mine
    encoder = load_sentence_transformer(params.first_stage_model, family.key("mine.first_stage_model"))
    extract = entity_extractor(family)
    prefix = params.negatives.query_prefix
    with atomic_directory(family.paths.mined) as out:
        for dataset in DATASETS:
            collection = load_collection(family.paths.prepared / dataset)
            scored = retrieve(encoder, collection, params.candidates, params.batch_size, prefix) \
                if collection.candidates == "corpus" else score_judged(encoder, collection, params.batch_size, prefix)
            pool = select_pool(scored, params.candidates, params.negatives, dataset, family.params.seed)
            pool = with_features(pool, extract, params.features)
            pool.write_parquet(out / f"{dataset}.parquet")
            train = pool.filter(pl.col("split") == "train")
            kinds = dict(train.filter(pl.col("train_pair"))["pair"].value_counts().iter_rows())
            print(f"mine: {dataset}: training pairs {kinds}; test candidate lists of up to {params.candidates}")
