"""What checkpoint selection costs on a real-format collection of about 5,000 documents, and whether the bounded dev
corpus picks the epoch a full-corpus dev evaluation picks.

The matryoshka train stage evaluates every epoch on the dev queries against `evaluate.dev_corpus_size` documents
(every judged one plus a seeded sample of the others) and keeps the best epoch. Here the embedded profile's train
stage runs twice on the same BEIR folder, one after the other in one process: once as `dvc repro` runs it, once with
the dev corpus made the whole corpus. Training is seeded and the evaluation draws no random numbers, so both runs
train the same checkpoints and differ only in what the dev evaluation searches. The table goes into
docs/checkpoint_selection.md.
"""

from __future__ import annotations

import json
import os
import platform
import random
import time
from pathlib import Path

import polars as pl
import pytest
from helpers import FamilyStages, repo_params, write_beir_files, write_params

WORLDS, FACILITIES, COMPANIES = 5, 200, 20  # one world runs out of distinct names at about 200 facilities
DOCUMENTS = 5000
TRAIN_QUERIES, TEST_QUERIES = 800, 300       # SciFact's sizes: 809 training and 300 test claims over 5,183 abstracts
RUNS = ["bounded dev corpus", "whole corpus"]  # as `dvc repro` runs it; the full-corpus evaluation
GROUP = "matryoshka train stage, 5,000-document BEIR folder (embedded profile)"
RESULTS: dict[str, dict] = {}
REPORT = Path(__file__).resolve().parents[2] / "docs" / "checkpoint_selection.md"


def write_collection(folder: Path) -> int:
    """A SciFact-like BEIR folder from several synthetic worlds: DOCUMENTS abstracts, one claim about each, a seeded
    sample of the claims as train and test queries. Returns the number of documents."""
    from retrieval_pipeline.core.world import build_world
    from retrieval_pipeline.families.colbert.synthetic import claim_collection

    corpus, queries, qrels = [], [], []
    for seed in range(WORLDS):
        documents, claims, judged = claim_collection(build_world(seed, FACILITIES, COMPANIES), 1, seed)
        prefix = f"w{seed:02d}-"
        corpus += [{**row, "_id": prefix + row["_id"]} for row in documents]
        queries += [{**row, "_id": prefix + row["_id"]} for row in claims]
        qrels += [(prefix + row["query-id"], prefix + row["corpus-id"]) for row in judged]
    corpus = corpus[:DOCUMENTS]
    kept = {row["_id"] for row in corpus}
    qrels = [(query, document) for query, document in qrels if document in kept]
    chosen = random.Random(0).sample([query for query, _ in qrels], TRAIN_QUERIES + TEST_QUERIES)
    split = {query: "test" if n < TEST_QUERIES else "train" for n, query in enumerate(chosen)}
    write_beir_files(folder, corpus, [row for row in queries if row["_id"] in split],
                     {name: [(query, document, 1) for query, document in qrels if split.get(query) == name]
                      for name in ("train", "test")})
    return len(corpus)


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> tuple[Path, int]:
    folder = tmp_path_factory.mktemp("selection") / "collection"
    return folder, write_collection(folder)


@pytest.fixture(scope="module")
def warm(collection, tmp_path_factory) -> None:
    """One short, untimed train stage first: the first in a process pays for loading libraries and the model, which
    would otherwise land on whichever run is timed first."""
    root = tmp_path_factory.mktemp("warm-up")
    write_params(root, {"matryoshka": {"embedded": {"data": {"source": "local", "local": {"path": str(collection[0])}},
                                                     "train": {"epochs": 1}, "evaluate": {"dev_corpus_size": 100}}}})
    family = FamilyStages("matryoshka", root)
    family.prepare()
    family.train()


def curve(log: Path, name: str) -> list[float]:
    return pl.read_csv(log / "plots" / "metrics" / "eval" / f"{name}.tsv", separator="\t")[name].to_list()


def record(run: str, family: FamilyStages, seconds: float, documents: int) -> None:
    params = family.params
    metric = f"dev_dim_{params.train.best_checkpoint_dim}_ndcg@10"
    dev = curve(family.paths.training_log, metric)
    test = json.loads((family.paths.trained_scores / "finetuned" / "metrics.json").read_text(encoding="utf-8"))
    evaluation = sum(curve(family.paths.training_log, "runtime"))
    RESULTS[run] = {"dev_documents": min(params.evaluate.dev_corpus_size, documents), "seconds": seconds,
                    "evaluation": evaluation, "dev": dev, "epoch": dev.index(max(dev)) + 1,
                    "test": test["chunks"][f"dim_{params.train.best_checkpoint_dim}"]["ndcg@10"]}
    if len(RESULTS) == len(RUNS):
        write_report(documents, metric)


def write_report(documents: int, metric: str) -> None:
    bounded, full = RESULTS["bounded dev corpus"], RESULTS["whole corpus"]
    epochs = len(bounded["dev"])
    same = "the same epoch" if bounded["epoch"] == full["epoch"] else "different epochs"
    REPORT.write_text("\n".join([
        "# Checkpoint selection on a 5,000-document collection", "",
        "Written by `make bench` (tests/benchmarks/test_checkpoint_selection.py): the matryoshka train stage of the "
        f"embedded profile on a BEIR folder of {documents:,} documents ({TRAIN_QUERIES} training and "
        f"{TEST_QUERIES} test queries, SciFact's sizes; abstracts built from the synthetic worlds), run twice one "
        "after the other in one process on this machine "
        f"({platform.machine()}, {os.cpu_count()} CPUs): as `dvc repro` runs it, and with the dev evaluation "
        "searching the whole corpus. Training is seeded, so both runs train the same checkpoints.", "",
        f"| dev corpus | documents | train stage (s) | dev evaluation (s) | share | {metric} by epoch | "
        "epoch kept | test NDCG@10 of the kept model |",
        "|---|---|---|---|---|---|---|---|",
        *(f"| {run} | {r['dev_documents']:,} | {r['seconds']:.1f} | {r['evaluation']:.1f} | "
          f"{r['evaluation'] / r['seconds']:.1%} | {' / '.join(f'{v:.4f}' for v in r['dev'])} | "
          f"{r['epoch']} of {epochs} | {r['test']:.4f} |" for run, r in RESULTS.items()), "",
        f"Both pick {same}. The bounded dev evaluation takes {bounded['evaluation'] / bounded['seconds']:.1%} of "
        f"its train stage, against {full['evaluation'] / full['seconds']:.1%} when it searches the whole corpus; "
        f"the stage takes {bounded['seconds'] / full['seconds']:.2f}x the time. On the embedded profile's own data "
        "the corpus is smaller than the bound, so its dev evaluation searches every document either way.", ""]),
        encoding="utf-8")


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("run", RUNS)
def test_train_stage_on_a_5000_document_collection(benchmark, collection, warm, tmp_path, run):
    folder, documents = collection
    bound = repo_params()["matryoshka"]["embedded"]["evaluate"]["dev_corpus_size"]
    write_params(tmp_path, {"matryoshka": {"embedded": {
        "data": {"source": "local", "local": {"path": str(folder)}},
        "evaluate": {"dev_corpus_size": bound if run == RUNS[0] else documents}}}})
    family = FamilyStages("matryoshka", tmp_path)
    family.prepare()
    start = time.perf_counter()
    benchmark.pedantic(family.train, rounds=1, iterations=1)
    record(run, family, time.perf_counter() - start, documents)
