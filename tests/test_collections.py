"""BEIR folders as every family's data source: the reader, each family's prepare, and search at scale."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import polars as pl
import pytest
import torch
from helpers import (
    TINY_COLBERT,
    TINY_DPR,
    TINY_MATRYOSHKA,
    TINY_RERANKER,
    FamilyStages,
    write_beir_collection,
    write_params,
)

from retrieval_pipeline.core.beir_files import read_beir_folder
from retrieval_pipeline.core.collection import load_collection
from retrieval_pipeline.core.errors import DataError
from retrieval_pipeline.core.params import deep_merge
from retrieval_pipeline.core.retrieval import bounded_corpus

SPLITS, DEV = {"train": "train", "test": "test"}, {"dev": "dev"}

TINY = {"matryoshka": TINY_MATRYOSHKA, "dpr": TINY_DPR, "reranker": TINY_RERANKER, "colbert": TINY_COLBERT}


def family_on(tmp_path, name, folder, extra=None):
    data = {"source": "local", "local": {"path": str(folder)}}
    if name == "reranker":
        data = {"multihop": data, "factual": data}
    write_params(tmp_path / "run", deep_merge(TINY[name], {name: {"embedded": deep_merge({"data": data},
                                                                                       extra or {})}}))
    return FamilyStages(name, tmp_path / "run")


# The reader ---------------------------------------------------------------------------------------------------


def test_a_real_format_folder_is_read_with_graded_qrels_and_titles(tmp_path):
    folder = write_beir_collection(tmp_path / "beir", dev=True)
    collection = read_beir_folder(folder, SPLITS, DEV)
    assert set(collection.splits) == {"train", "dev", "test"}
    assert collection.corpus["text"][0].startswith("Ironbridge Infrastructure Group: Profile ")  # title first
    graded = collection.qrels.filter(pl.col("query_id") == "claim00000").sort("relevance")["relevance"].to_list()
    assert graded == [0, 1, 2]  # 0: judged, not relevant
    queries, qrels = collection.split("test")
    assert "claim00000" in set(queries["query_id"]) and len(qrels["claim00000"]) == 3
    assert collection.positives("test").filter(pl.col("query_id") == "claim00000").height == 2


def test_a_judgement_repeated_exactly_is_kept_once_and_counted(tmp_path, capsys):
    folder = write_beir_collection(tmp_path / "beir")
    test_qrels = folder / "qrels" / "test.tsv"
    original = read_beir_folder(folder, SPLITS).qrels
    lines = test_qrels.read_bytes().split(b"\r\n")
    test_qrels.write_bytes(b"\r\n".join([*lines[:3], lines[1], lines[2], *lines[3:]]))
    capsys.readouterr()
    repeated = read_beir_folder(folder, SPLITS).qrels
    printed = capsys.readouterr().out
    assert f"{test_qrels}: 2 repeated judgement(s) (same query, document and grade) kept once" in printed
    assert repeated.equals(original)


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "qrels" / "test.tsv").unlink(), r"qrels/test.tsv: missing; expected a BEIR folder"),
    (lambda f: (f / "queries.jsonl").write_text('{"_id": "q1", "text": "A"}\n{"_id": "q1", "text": "B"}\n'),
     r"queries.jsonl: line 2: duplicate _id 'q1'"),
    (lambda f: (f / "queries.jsonl").write_text('{"_id": "q1", "text": "A"}\n{"_id": "q2", "text": \n'),
     r"queries.jsonl: line 2: not valid JSON"),
    (lambda f: (f / "queries.jsonl").write_text('{"_id": "q1", "text": "  "}\n'),
     r"queries.jsonl: line 1: 'text' is empty"),
    (lambda f: (f / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nclaim00002\tdoc99999\t1\n"),
     r"qrels/train.tsv: line 2: corpus-id 'doc99999' is not in the corpus"),
    (lambda f: (f / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nclaim00002\tdoc00001\thigh\n"),
     r"qrels/train.tsv: line 2: score 'high' is not an integer"),
    (lambda f: (f / "qrels" / "train.tsv").write_text("qid\tdocid\trel\n"), r"qrels/train.tsv: line 1: header"),
    (lambda f: (f / "corpus.jsonl.gz").write_bytes(b"not gzip"), r"corpus.jsonl.gz: cannot read the file"),
])
def test_a_broken_folder_names_the_file_and_the_line(tmp_path, damage, message):
    folder = write_beir_collection(tmp_path / "beir")
    damage(folder)
    with pytest.raises(DataError, match=message):
        read_beir_folder(folder, SPLITS)


def test_a_large_corpus_is_read_in_about_its_own_size(tmp_path):
    """The reader holds a block of lines at a time before Arrow: peak memory stays below 3x the file."""
    path = tmp_path / "corpus.jsonl"
    line = "register text about a wind farm, its output, its operator and its licence " * 6
    with path.open("w", encoding="utf-8") as out:
        for index in range(200_000):
            out.write(json.dumps({"_id": f"d{index}", "title": "A title", "text": f"{index} {line}",
                                  "metadata": {"n": index}}) + "\n")
    size = path.stat().st_size
    code = (f"import resource, polars, pyarrow\nfrom retrieval_pipeline.core.beir_files import read_texts\n"
            f"before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            f"frame = read_texts(__import__('pathlib').Path({str(path)!r}), 'document_id', 'documents', True)\n"
            f"after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\nprint(frame.height, (after - before) * 1024)")
    rows, grown = map(int, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                          check=True).stdout.split())
    assert rows == 200_000 and grown < 3 * size, f"{grown / 2**20:.0f} MiB for a {size / 2**20:.0f} MiB file"


# Every family on a BEIR folder --------------------------------------------------------------------------------


@pytest.mark.parametrize("dev", [True, False])
def test_matryoshka_trains_on_the_train_qrels_and_evaluates_the_test_split_on_the_whole_corpus(tmp_path, dev):
    folder = write_beir_collection(tmp_path / "beir", dev=dev)
    family = family_on(tmp_path, "matryoshka", folder)
    family.prepare()
    prepared = load_collection(family.paths.prepared)
    train, corpus = prepared.pairs("train"), prepared.corpus
    queries = prepared.judged_queries().filter(pl.col("split") != "train")
    assert corpus.height == 14  # the whole corpus, not only the judged chunks
    assert train.filter(pl.col("query_id") == "claim00002").height == 2  # two relevant documents, two pairs
    assert set(train["query_id"]).isdisjoint(set(queries["query_id"]))
    collection = read_beir_folder(folder, SPLITS, DEV)
    dev_queries = set(queries.filter(pl.col("split") == "dev")["query_id"])
    if dev:
        assert dev_queries == set(collection.split("dev")[0]["query_id"])
    else:  # a share of the training queries
        assert dev_queries and dev_queries <= set(collection.split("train")[0]["query_id"])
    assert set(queries.filter(pl.col("split") == "test")["query_id"]) == set(collection.split("test")[0]["query_id"])


def test_the_dev_corpus_is_every_judged_document_and_a_fixed_sample_up_to_its_bound():
    corpus = pl.DataFrame({"document_id": [f"d{i:04d}" for i in range(5000)], "text": ["x"] * 5000})
    judged = ["d4999", "d0007", "d0007", "d2500"]
    dev = bounded_corpus(corpus, judged, 500, seed=42)
    assert dev.height == 500 and set(judged) <= set(dev["document_id"])
    assert dev["document_id"].is_sorted() and dev["document_id"].n_unique() == 500
    assert dev.equals(bounded_corpus(corpus, judged, 500, seed=42))
    assert not dev.equals(bounded_corpus(corpus, judged, 500, seed=7))
    # a corpus within the bound is searched whole, exactly as it is
    assert bounded_corpus(corpus.head(390), judged[1:2], 500, seed=42).equals(corpus.head(390))


def test_dpr_reads_a_beir_folder_with_graded_qrels(tmp_path):
    family = family_on(tmp_path, "dpr", write_beir_collection(tmp_path / "beir"))
    family.prepare()
    collection = load_collection(family.paths.prepared)
    _, qrels = collection.split("test")
    assert collection.corpus.height == 14 and sorted(qrels["claim00000"].values()) == [0, 1, 2]
    assert set(collection.splits) == {"train", "test"}  # no dev split: DPR selects no checkpoint
    from retrieval_pipeline.families.dpr.scoring import gold_passages

    gold = gold_passages(["claim00000"], qrels)[0]
    assert qrels["claim00000"][gold] == 2  # the most relevant passage is the gold pair for the logit diagnostics


def test_the_reranker_reorders_the_first_stages_top_documents_of_a_collection(tmp_path):
    family = family_on(tmp_path, "reranker", write_beir_collection(tmp_path / "beir"),
                       {"mine": {"candidates": 5, "negatives": {"hard_per_positive": 2, "easy_per_positive": 1}}})
    family.prepare()
    family.mine()
    pool = pl.read_parquet(family.paths.mined / "factual.parquet")
    test = pool.filter((pl.col("split") == "test") & pl.col("candidate"))
    assert test.group_by("query_id").len()["len"].max() == 5  # the first stage's top 5 over the whole corpus
    training = pool.filter(pl.col("train_pair"))
    assert set(training["pair"]) == {"positive", "hard", "easy"}
    assert training.filter(pl.col("pair") == "positive").group_by("query_id").len()["len"].max() == 2
    from retrieval_pipeline.families.reranker.ranking import candidate_lists

    lists, qrels = candidate_lists(family.stage("baseline"), "test")
    assert sorted(qrels["factual"]["claim00000"].values()) == [0, 1, 2]


def test_the_reranker_replays_its_longrag_pairs_into_a_collections(tmp_path):
    """`collection` replaces the factual dataset only: the replay variant of stage 2 stacks the collection's pairs
    with the LongRAG-shaped multi-hop ones, so both pools keep one layout."""
    from retrieval_pipeline.families.reranker.train import stage_pairs

    folder = write_beir_collection(tmp_path / "beir")
    write_params(tmp_path / "run", deep_merge(TINY["reranker"], {"reranker": {"embedded": {
        "data": {"factual": {"source": "local", "local": {"path": str(folder)}}},
        "train": {"stage2_replay": {"replay": 1.0, "variants": ["plain"]}}}}}))
    family = FamilyStages("reranker", tmp_path / "run")
    family.prepare()
    family.mine()
    factual, multihop = (pl.read_parquet(family.paths.mined / f"{name}.parquet") for name in ("factual", "multihop"))
    assert factual.columns == multihop.columns
    pairs = stage_pairs(family.stage("train"), "stage2_replay")
    assert set(pairs["split"]) == {"train"} and pairs["train_pair"].all()
    assert pairs.height == factual.filter(pl.col("train_pair") & (pl.col("split") == "train")).height + \
        multihop.filter(pl.col("train_pair") & (pl.col("split") == "train")).height


def test_colbert_reads_a_gzipped_crlf_folder(tmp_path):
    family = family_on(tmp_path, "colbert", write_beir_collection(tmp_path / "beir"))
    family.prepare()
    from retrieval_pipeline.families.colbert.scoring import test_set

    queries, corpus, qrels = test_set(family.paths.prepared)
    assert corpus.height == 14 and sorted(qrels["claim00000"].values()) == [0, 1, 2]


HUB_COLLECTION = ("{corpus: {path: BeIR/scifact, name: corpus, split: corpus}, "
                  "queries: {path: BeIR/scifact, name: queries, split: queries}, qrels: {path: BeIR/scifact-qrels}}")


@pytest.mark.slow
def test_every_family_prepares_one_beir_dataset_on_the_hub_named_by_collection(twin_cache, tmp_path):
    """`dvc exp run -S collection={corpus, queries, qrels}` on BEIR's hub layout (the twins' cache holds BeIR/scifact
    as its gzipped files beside a loading script, and BeIR/scifact-qrels): every family's prepared collection is
    that corpus with its train and test queries, the reranker's factual dataset among them."""
    from helpers import REPO, copy_repo, run

    from retrieval_pipeline.core.beir_hub import read_beir_hub
    from retrieval_pipeline.core.dag import dag_families
    from retrieval_pipeline.core.sources import HubSource

    families = dag_families(REPO)
    repo = copy_repo(tmp_path, deep_merge(deep_merge(TINY_MATRYOSHKA, TINY_DPR), deep_merge(TINY_RERANKER,
                                                                                            TINY_COLBERT)))
    output = run(["dvc", "exp", "run", "-S", f"collection={HUB_COLLECTION}",
                  *[f"prepare@{family}" for family in families]], repo, **twin_cache)
    prepared = [line for line in output.splitlines() if line.startswith("prepare: ")]
    assert sum("BEIR BeIR/scifact with qrels BeIR/scifact-qrels: " in line for line in prepared) == len(families), \
        output
    # each unpinned part warns once per family, naming the key the user set
    assert output.count("WARNING: params.yaml: collection.corpus: BeIR/scifact is not pinned") == len(families)
    assert "hf_beir" not in output
    expected = read_beir_hub(HubSource(path="BeIR/scifact"), HubSource(path="BeIR/scifact"),
                             HubSource(path="BeIR/scifact-qrels"), SPLITS)
    for family in families:
        prepared = load_collection(repo / "data" / family / "prepared" / ("factual" if family == "reranker" else ""))
        assert set(prepared.corpus["document_id"]) == set(expected.corpus["document_id"]), family
        assert set(prepared.positives("test")["query_id"]) == set(expected.positives("test")["query_id"]), family
        assert set(prepared.positives("train")["query_id"]) | set(prepared.positives("dev")["query_id"]) \
            == set(expected.positives("train")["query_id"]), family


# Search at scale ------------------------------------------------------------------------------------------------


def test_exact_maxsim_is_the_same_in_blocks_and_the_plaid_index_ranks_alike(tmp_path):
    from retrieval_pipeline.families.colbert.params import IndexParams
    from retrieval_pipeline.families.colbert.search import maxsim_search, plaid_search

    generator = torch.Generator().manual_seed(0)
    topics = torch.nn.functional.normalize(torch.randn(40, 32, generator=generator), dim=-1)
    # each document: tokens near one topic; each query: tokens near its document's topic
    documents = [torch.nn.functional.normalize(topics[i % 40] + 0.15 * torch.randn(30, 32, generator=generator), dim=-1)
                 for i in range(200)]
    queries = [torch.nn.functional.normalize(topics[i] + 0.15 * torch.randn(8, 32, generator=generator), dim=-1)
               for i in range(40)]
    whole = maxsim_search(queries, documents, 10, document_block=len(documents))
    assert (maxsim_search(queries, documents, 10, document_block=7) == whole).all()
    scores = torch.stack([torch.stack([(q @ d.T).max(dim=1).values.sum() for d in documents]) for q in queries])
    assert (scores.topk(10, dim=1).indices.numpy() == whole).all()
    index = IndexParams(above_documents=1, nbits=8, kmeans_iterations=4, centroid_sample=200, n_ivf_probe=64,
                        n_full_scores=200)
    found = plaid_search(queries, documents, 10, index, tmp_path / "index", seed=0)
    # each query's topic holds five documents: both searches rank exactly those first (PLAID's compressed scores may
    # swap near-equal ones among them)
    for exact, approximate in zip(whole, found):
        assert set(exact[:5]) == set(approximate[:5])
    assert not (tmp_path / "index").exists()


def test_colbert_serves_from_the_index_its_evaluation_searches_and_counts_its_bytes(tmp_path):
    """Up to evaluate.index.above_documents the float32 token vectors searched by exact MaxSim, above a PLAID index
    whose files are counted, and deleted on leaving."""
    from retrieval_pipeline.core.resolve import load_family
    from retrieval_pipeline.families.colbert.evaluate import searcher

    generator = torch.Generator().manual_seed(0)
    documents = [torch.nn.functional.normalize(torch.randn(30, 32, generator=generator), dim=-1) for _ in range(200)]
    query = documents[7][:8]
    index = {"above_documents": 200, "nbits": 8, "kmeans_iterations": 2, "centroid_sample": 50}
    for above, exact in ((200, True), (199, False)):
        family = load_family("colbert", write_params(tmp_path / str(above), deep_merge(TINY_COLBERT, {"colbert": {
            "embedded": {"evaluate": {"index": {**index, "above_documents": above}}}}})), tmp_path / str(above))
        with searcher(family, documents, "serving-index") as (search, stored):
            assert search(query)[0][0] == 7
            # exact: the float32 vectors; PLAID: its files (codes, residuals, centroids, the inverted file), which
            # at 200 documents outweigh the vectors they compress
            assert stored == 200 * 30 * 32 * 4 if exact else stored > 0
        assert not [path for path in (tmp_path / str(above)).rglob("*") if "serving-index" in path.name]


def test_the_plaid_index_takes_its_centroids_from_the_sample(tmp_path):
    """The count follows fast-plaid's rule on `centroid_sample` documents' token vectors, and fast-plaid really
    builds that many (a fast-plaid whose create() no longer goes through compute_kmeans fails here)."""
    from fast_plaid import search as fast_plaid

    from retrieval_pipeline.families.colbert.search import centroid_count, centroids_from_sample

    generator = torch.Generator().manual_seed(0)
    documents = [torch.nn.functional.normalize(torch.randn(30, 32, generator=generator), dim=-1) for _ in range(200)]
    assert centroid_count(documents, 200) == centroid_count(documents, 1000) == 1024  # 16 * sqrt(6,000 vectors)
    assert centroid_count(documents, 50) == 512  # 16 * sqrt(1,500)
    compute_kmeans = fast_plaid.fast_plaid.compute_kmeans
    with centroids_from_sample(512):
        fast_plaid.FastPlaid(index=str(tmp_path / "index"), device="cpu").create(
            documents_embeddings=documents, nbits=2, kmeans_niters=2, n_samples_kmeans=50, seed=0,
            use_triton_kmeans=False)
    assert fast_plaid.fast_plaid.compute_kmeans is compute_kmeans
    assert np.load(tmp_path / "index" / "centroids.npy", allow_pickle=False).shape == (512, 32)


def test_query_latency_times_each_query_alone_after_a_warm_up():
    from retrieval_pipeline.core.retrieval import dense_answer, dense_index, dense_index_bytes
    from retrieval_pipeline.core.serving import serving_row

    asked = []
    row = serving_row("toy", False, lambda query: asked.append(query) or time.sleep(0.01 if query == "slow" else 0.0),
                      ["fast"] * 18 + ["slow"] * 2, 40, 4, dim=8)
    assert asked == ["fast"] + ["fast"] * 18 + ["slow"] * 2  # the first query once more, as the warm-up
    assert row["latency_ms_median"] < 5 <= row["latency_ms_p95"]
    assert {key: row[key] for key in ("model", "fine_tuned", "dim", "bytes_per_document")} == {
        "model": "toy", "fine_tuned": False, "dim": 8, "bytes_per_document": 10.0}
    vectors = np.eye(4, dtype=np.float32)
    index = dense_index(vectors)
    assert dense_index_bytes(index) == vectors.nbytes
    _, positions = dense_answer(lambda query: vectors[[int(query)]], index, top_k=100)("2")
    assert positions[0].tolist()[0] == 2 and len(positions[0]) == 4  # top_k bounded by the corpus


def test_rows_on_one_encoder_encode_each_query_once_and_count_it_in_each_row():
    """A model's indexes (every dim, the hybrid, the compressed ones) answer from one encoding per query: each row's
    latency is that encoding's time plus its own search."""
    from retrieval_pipeline.core.serving import Served, serving_rows

    encoded, searched = [], []

    def encode(query: str) -> str:
        encoded.append(query)
        time.sleep(0.02)
        return query.upper()

    def search(name: str, seconds: float):
        return lambda query, encoding: searched.append((name, query, encoding)) or time.sleep(seconds)

    rows = serving_rows(encode, [Served("fast", True, 8, search("fast", 0.0), {"dim": 2}),
                                 Served("slow", True, 80, search("slow", 0.02))], ["a", "b", "c"], 4)
    assert encoded == ["a", "a", "b", "c"]  # a warm-up, then each query once
    assert searched[-2:] == [("fast", "c", "C"), ("slow", "c", "C")]
    fast, slow = rows
    assert fast["dim"] == 2 and "dim" not in slow
    assert (fast["bytes_per_document"], slow["bytes_per_document"]) == (2, 20)
    assert 20 <= fast["latency_ms_median"] < 35 and 40 <= slow["latency_ms_median"] < 60
