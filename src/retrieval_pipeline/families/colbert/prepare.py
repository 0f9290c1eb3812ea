"""ColBERT's prepare stage: the collection (synthetic claims over abstracts, a BEIR folder or a BEIR dataset on the
hub) with train and test queries, and each NanoBEIR collection evaluated beside it, under nanobeir/<name>/."""

from __future__ import annotations

import polars as pl

from retrieval_pipeline.core.beir import read_beir_source
from retrieval_pipeline.core.collection import Collection, collection_from_frames, require_trainable, write_collection
from retrieval_pipeline.core.io import atomic_directory, atomic_write_json
from retrieval_pipeline.core.reading import read_hub
from retrieval_pipeline.core.sources import HubSource, split_revision
from retrieval_pipeline.core.splits import add_split_column
from retrieval_pipeline.core.world import build_world
from retrieval_pipeline.families.colbert import NANOBEIR, Colbert
from retrieval_pipeline.families.colbert.synthetic import claim_collection


def collection_name(reference: str) -> str:
    return split_revision(reference)[0].rstrip("/").split("/")[-1]


def nanobeir_sources(reference: str) -> list[HubSource]:
    """A NanoBEIR collection's three hub configs (corpus, queries, qrels), each in split `train`, at the reference's
    revision."""
    repo, revision = split_revision(reference)
    return [HubSource(path=repo, name=config, split="train", revision=revision)
            for config in ("corpus", "queries", "qrels")]


def read_nanobeir(reference: str) -> Collection:
    """A NanoBEIR collection from the hub (evaluated as a test split); its qrels list only relevant pairs (no score
    column), so each counts as relevance 1."""
    frames, origins = {}, {}
    for source in nanobeir_sources(reference):
        frames[source.name], origins[source.name] = read_hub(source)
    qrels = frames["qrels"]
    if "score" not in qrels.columns:
        qrels = qrels.with_columns(score=pl.lit(1))
    return collection_from_frames(frames["corpus"], frames["queries"], {"test": qrels},
                                  {**origins, "test": origins["qrels"]})


def read_collection(family: Colbert) -> Collection:
    """The training and test collection, its splits named train and test whatever the source calls them."""
    data = family.params.data
    if data.source != "synthetic":
        return read_beir_source(data, dev=False)[0]
    synthetic = data.synthetic
    world = build_world(family.params.seed, synthetic.facilities, synthetic.companies)
    corpus, queries, qrels = claim_collection(world, synthetic.claims_per_abstract, family.params.seed,
                                              synthetic.chunks_per_abstract)
    queries = pl.DataFrame(queries)
    split = add_split_column(queries, synthetic.test_size, 0.0, family.params.seed, "synthetic world",
                             family.key("data.synthetic.test_size"))
    qrels = pl.DataFrame(qrels).join(split.select(pl.col("_id").alias("query-id"), "split"), on="query-id")
    splits = ("train", "test")
    origins = {"corpus": "synthetic corpus", "queries": "synthetic queries",
               **{name: f"synthetic qrels[{name}]" for name in splits}}
    return collection_from_frames(pl.DataFrame(corpus), queries, {
        name: qrels.filter(pl.col("split") == name).drop("split") for name in splits}, origins)


def prepare(family: Colbert) -> None:
    collection = read_collection(family)
    require_trainable(collection, family.params.data.describe())
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
    print(f"prepare: {family.params.data.describe()}: {collection.corpus.height} documents; judged queries "
          f"{counts}{extra}")
