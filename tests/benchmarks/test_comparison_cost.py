"""What the comparison rows (BM25, the hybrid, compressed embeddings: core/comparisons.py) add to a dense family's
evaluate stage on a 5,000-document BEIR collection, set against that family's train stage on the same collection,
with the default params, as the README's one-family line runs them. The bound the rows are built to: the added
evaluation under a tenth of the train stage on the same machine. Measured, not gated: the ratio is printed and kept
in the benchmark's extra_info.

The collection: the synthetic world's claims (900, a quarter of them test queries) over their 300 abstracts, and
4,700 unjudged documents of the same register's sentences (tests/benchmarks/scale.py) to make 5,000."""

from __future__ import annotations

import time

import pytest
from benchmarks.scale import corpus as filler_texts
from helpers import FamilyStages, write_beir_files, write_params

from retrieval_pipeline.core.family import read_scores

DOCUMENTS = 5_000


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    from retrieval_pipeline.core.world import build_world
    from retrieval_pipeline.families.colbert.synthetic import claim_collection

    corpus, queries, qrels = claim_collection(build_world(11, facilities=48, companies=12), 3, 11)
    filler, _ = filler_texts(DOCUMENTS - len(corpus), seed=11)
    corpus += [{"_id": f"filler{index:05d}", "title": "", "text": text} for index, text in enumerate(filler)]
    splits = {"train": [], "test": []}
    for row in qrels:
        number = int(row["query-id"].removeprefix("claim"))
        splits["test" if number % 4 == 0 else "train"].append((row["query-id"], row["corpus-id"], 1))
    return write_beir_files(tmp_path_factory.mktemp("collection"), corpus, queries, splits)


def trained(family: str, folder, root) -> tuple[FamilyStages, float]:
    """The family's stages up to train on the collection, and the train stage's seconds."""
    write_params(root, {family: {"embedded": {"data": {"source": "local", "local": {"path": str(folder)}}}}})
    stages = FamilyStages(family, root)
    for stage in ("prepare", "base", "mine", "baseline"):
        stages.run(stage)
    start = time.perf_counter()
    stages.run("train")
    return stages, time.perf_counter() - start


def added_serving(bm25, served, encode, queries: list[str], documents: int, top_k: int) -> float:
    """What the added rows add to the serving measurement: BM25's row, and each added index's search per query.
    Their queries' encoding is not added work: the fine-tuned model's own row encodes each query once and every
    index built on it answers from that encoding (core/serving.py), so here it is looked up, not recomputed."""
    from retrieval_pipeline.core.comparisons import BM25
    from retrieval_pipeline.core.lexical import lexical_answer
    from retrieval_pipeline.core.serving import serving_row, serving_rows

    encodings = {query: encode(query) for query in queries}
    start = time.perf_counter()
    serving_row(BM25, False, lexical_answer(bm25, top_k), queries, bm25.bytes(), documents)
    serving_rows(encodings.__getitem__, served, queries, documents)
    return time.perf_counter() - start


def added_dpr(stages: FamilyStages) -> float:
    """The evaluate stage's added work: the comparison rows' scores and indexes, and their serving rows. Not counted:
    the passages' encoding by the fine-tuned tower, which the serving measurement always did."""
    from retrieval_pipeline.families.dpr.evaluate import comparisons, encoded, test_set, trained_towers

    family = stages.stage("evaluate")
    test, towers = test_set(family), trained_towers(family)
    evaluate = family.params.evaluate
    documents = encoded(towers, test.documents, "document", evaluate.batch_size)
    start = time.perf_counter()
    _, bm25, served = comparisons(family, test, towers, encoded(towers, test.queries, "query", evaluate.batch_size),
                                  documents)
    scoring = time.perf_counter() - start
    encode = lambda query: towers["query"].encode([query], convert_to_numpy=True)  # noqa: E731
    return scoring + added_serving(bm25, served, encode, test.queries, len(test.documents), evaluate.top_k)


def added_matryoshka(stages: FamilyStages) -> float:
    """As added_dpr: the comparison rows' scores and indexes at every dim, and their serving rows."""
    from retrieval_pipeline.core.collection import load_collection
    from retrieval_pipeline.families.matryoshka.evaluate import comparisons, encode
    from retrieval_pipeline.families.matryoshka.model import load_model

    family = stages.stage("evaluate")
    scores = read_scores(family.paths.trained_scores)
    model = load_model(family, str(family.paths.model), "the fine-tuned model")
    collection = load_collection(family.paths.prepared)
    evaluate = family.params.evaluate
    documents = encode(model, collection.corpus["text"].to_list(), evaluate.batch_size)
    start = time.perf_counter()
    _, bm25, served = comparisons(family, scores, model, documents)
    scoring = time.perf_counter() - start
    queries = collection.split("test")[0]["text"].to_list()
    return scoring + added_serving(bm25, served, lambda query: model.encode([query], convert_to_numpy=True),
                                   queries, collection.corpus.height, evaluate.top_k)


ADDED = {"dpr": added_dpr, "matryoshka": added_matryoshka}


@pytest.mark.parametrize("family", sorted(ADDED))
def test_the_comparison_rows_cost_under_a_tenth_of_training(benchmark, collection, tmp_path, family):
    stages, training = trained(family, collection, tmp_path / "run")
    added = benchmark.pedantic(ADDED[family], args=(stages,), rounds=1, iterations=1)
    benchmark.extra_info.update({"documents": DOCUMENTS, "train_seconds": training, "added_seconds": added,
                                 "ratio": added / training})
    print(f"\n{family}: train stage {training:.0f} s; comparison rows (scores and serving rows) {added:.1f} s; "
          f"ratio {added / training:.3f} (bound 0.1)")
