"""ColBERT's prepare stage: the collection (synthetic claims over abstracts, a BEIR folder or a BEIR dataset on the
hub) with train and test queries, and each NanoBEIR collection evaluated beside it, under nanobeir/<name>/."""

from __future__ import annotations

import polars as pl

from retrieval_pipeline.core.beir import Collection, collection_from_frames, read_beir_folder, write_collection
from retrieval_pipeline.core.io import atomic_directory, atomic_write_json
from retrieval_pipeline.core.reading import read_hub
from retrieval_pipeline.core.sources import HubSource
from retrieval_pipeline.core.splits import add_split_column
from retrieval_pipeline.core.world import build_world
from retrieval_pipeline.families.colbert import NANOBEIR, Colbert
from retrieval_pipeline.families.colbert.synthetic import claim_collection


def collection_name(repo: str) -> str:
    return repo.rstrip("/").split("/")[-1]


def read_nanobeir(repo: str) -> Collection:
    """A NanoBEIR collection from the hub: configs corpus, queries and qrels, each in split `train` (evaluated as
    a test split); its qrels list only relevant pairs (no score column), so each counts as relevance 1."""
    frames, origins = {}, {}
    for config in ("corpus", "queries", "qrels"):
        frames[config], origins[config] = read_hub(HubSource(path=repo, name=config, split="train"))
    qrels = frames["qrels"]
    if "score" not in qrels.columns:
        qrels = qrels.with_columns(score=pl.lit(1))
    return collection_from_frames(frames["corpus"], frames["queries"], {"test": qrels},
                                  {**origins, "test": origins["qrels"]})


def read_collection(family: Colbert) -> Collection:
    """The training and test collection, its splits named train and test whatever the source calls them."""
    data = family.params.data
    splits = {"train": data.train_split, "test": data.test_split}
    if data.source == "synthetic":
        synthetic = data.synthetic
        world = build_world(family.params.seed, synthetic.facilities, synthetic.companies)
        corpus, queries, qrels = claim_collection(world, synthetic.claims_per_abstract, family.params.seed,
                                                  synthetic.chunks_per_abstract)
        queries = pl.DataFrame(queries)
        split = add_split_column(queries, synthetic.test_size, 0.0, family.params.seed, "synthetic world",
                                 family.key("data.synthetic.test_size"))
        qrels = pl.DataFrame(qrels).join(split.select(pl.col("_id").alias("query-id"), "split"), on="query-id")
        origins = {"corpus": "synthetic corpus", "queries": "synthetic queries",
                   **{name: f"synthetic qrels[{name}]" for name in splits}}
        return collection_from_frames(pl.DataFrame(corpus), queries, {
            name: qrels.filter(pl.col("split") == name).drop("split") for name in splits}, origins)
    if data.source == "local":
        return read_beir_folder(data.local.path, splits)
    hub = data.hf
    corpus, corpus_origin = read_hub(hub.corpus)
    queries, queries_origin = read_hub(hub.queries)
    loaded = {split: read_hub(hub.qrels.model_copy(update={"split": name})) for split, name in splits.items()}
    origins = {"corpus": corpus_origin, "queries": queries_origin,
               **{split: origin for split, (_, origin) in loaded.items()}}
    return collection_from_frames(corpus, queries, {split: frame for split, (frame, _) in loaded.items()}, origins)


def prepare(family: Colbert) -> None:
    collection = read_collection(family)
    nanobeir = {repo: read_nanobeir(repo) for repo in family.params.data.nanobeir}
    with atomic_directory(family.paths.prepared) as out:
        write_collection(collection, out)
        for repo, judged in nanobeir.items():
            folder = out / NANOBEIR / collection_name(repo)
            folder.mkdir(parents=True)
            write_collection(judged, folder)
        if nanobeir:  # the order the reports list them in: the recipe's
            atomic_write_json(out / NANOBEIR / "order.json", [collection_name(repo) for repo in nanobeir])
    counts = dict(collection.qrels.unique(["query_id", "split"])["split"].value_counts().iter_rows())
    extra = f"; NanoBEIR: {', '.join(collection_name(repo) for repo in nanobeir)}" if nanobeir else ""
    print(f"prepare: {collection.corpus.height} documents; judged queries {counts}{extra}")
