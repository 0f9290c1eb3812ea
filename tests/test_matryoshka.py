"""Matryoshka's recipe as its notebook runs it: the evaluation corpus of rows, the split, the trainer's column order
and the split that chooses the epoch (FT_Embedding_Models_on_Domain_Specific_Data_Matryoshka.ipynb)."""

from __future__ import annotations

import polars as pl
import pytest
from helpers import FIXTURES, TINY_MATRYOSHKA, FamilyStages, write_params

from retrieval_pipeline.core.collection import load_collection
from retrieval_pipeline.core.params import deep_merge

LEGAL = FIXTURES / "hub" / "legal-rag-positives-synthetic"


def family_at(tmp_path, overrides=None):
    write_params(tmp_path, deep_merge(TINY_MATRYOSHKA, overrides or {}))
    return FamilyStages("matryoshka", tmp_path)


def legal(tmp_path, data=None, **sections):
    """The legal pairs' hub fixture (chunks asked about by several questions) as the family's data source."""
    source = {"source": "hf", "hf": {"path": str(LEGAL), "split": "train"}, "test_size": 0.25, "dev_size": 0.0}
    return family_at(tmp_path, {"matryoshka": {"embedded": {"data": {**source, **(data or {})}, **sections}}})


def test_the_corpus_counts_the_rows_that_hold_each_chunk(tmp_path):
    family = legal(tmp_path)
    family.prepare()
    corpus = load_collection(family.paths.prepared).corpus
    source = pl.read_csv(LEGAL / "train.csv")
    rows = dict(source.group_by("global_chunk_id").len().iter_rows())
    assert dict(zip(corpus["document_id"].cast(pl.Int64), corpus["copies"])) == rows
    assert max(rows.values()) > 1  # chunks are repeated, as the hub rows repeat them once per question


def test_the_rows_corpus_scores_as_the_recipes_evaluator_over_every_row(tmp_path, minilm):
    """The recipe evaluates with sentence-transformers' InformationRetrievalEvaluator over a corpus of every row, a
    question's relevant documents every row of its chunk. The `rows` corpus scores the chunk ranking with each chunk
    repeated as often: the same numbers, without encoding a chunk twice."""
    from sentence_transformers.evaluation import InformationRetrievalEvaluator
    from sentence_transformers.util import cos_sim

    from retrieval_pipeline.families.matryoshka.scoring import score

    family = legal(tmp_path, model={"dims": [384, 32]}, train={"best_checkpoint_dim": 32})
    family.prepare()
    ours = score(family.stage("baseline"), minilm, "base")
    source = pl.read_csv(LEGAL / "train.csv").with_row_index("row")
    collection = load_collection(family.paths.prepared)
    test, _ = collection.split("test")
    tested = source.filter(pl.col("question").is_in(test["text"].implode()))
    assert tested.height == test.height > 1
    corpus = {f"r{row}": text for row, text in source.select("row", "text").iter_rows()}
    queries = {f"r{row}": question for row, question in tested.select("row", "question").iter_rows()}
    relevant = {f"r{row}": {f"r{other}" for other in source.filter(pl.col("global_chunk_id") == chunk)["row"]}
                for row, chunk in tested.select("row", "global_chunk_id").iter_rows()}
    for dim in (384, 32):
        recipe = InformationRetrievalEvaluator(queries, corpus, relevant, name=f"dim_{dim}", truncate_dim=dim,
                                               score_functions={"cosine": cos_sim})(minilm)
        mine = ours.metrics["rows"][f"dim_{dim}"]
        for metric in ("ndcg@10", "mrr@10", "accuracy@1", "accuracy@5", "precision@3", "recall@1", "recall@10"):
            assert mine[metric] == pytest.approx(recipe[f"dim_{dim}_cosine_{metric}"], abs=1e-6), (dim, metric)
        assert ours.metrics["chunks"][f"dim_{dim}"]["recall@1"] == mine["accuracy@1"]  # once each: recall = hit
    assert ours.metrics["corpus"] == "rows"


def test_split_by_rows_or_by_question(tmp_path):
    """The recipe splits rows, so a question asked in two rows can fall on both sides; `questions` keeps it on one."""
    rows = [f"Same question?,chunk {i},{i}" for i in range(12)] + [f"Question {i}?,chunk {i},{i}" for i in range(12)]
    path = tmp_path / "pairs.csv"
    path.write_text("question,text,global_chunk_id\n" + "\n".join(rows) + "\n", encoding="utf-8")
    local = {"source": "local", "local": {"path": str(path)}, "test_size": 0.25, "dev_size": 0.0}
    splits = {}
    for split_by in ("rows", "questions"):
        family = family_at(tmp_path / split_by, {"matryoshka": {"embedded": {"data": {**local, "split_by": split_by}}}})
        family.prepare()
        collection = load_collection(family.paths.prepared)
        judged = collection.judged_queries()
        splits[split_by] = set(judged.filter(pl.col("text") == "Same question?")["split"])
    assert splits["rows"] == {"train", "test"} and len(splits["questions"]) == 1


@pytest.mark.parametrize("order", [["positive", "anchor"], ["anchor", "positive"]])
def test_the_trainer_gets_the_columns_in_the_recipes_order(tmp_path, order):
    """The recipe's trainer gets (positive, anchor): MultipleNegativesRankingLoss anchors on the first column, so it
    trained chunk -> question; [anchor, positive] trains question -> chunk."""
    from retrieval_pipeline.families.matryoshka.train import training_pairs

    family = legal(tmp_path, train={"loss_columns": order})
    family.prepare()
    pairs = training_pairs(family.stage("train"))
    assert pairs.column_names == order
    chunks = set(pl.read_csv(LEGAL / "train.csv")["text"])
    assert set(pairs["positive"]) <= chunks and not set(pairs["anchor"]) & chunks


def test_the_epoch_is_chosen_on_the_split_select_on_names(tmp_path, minilm):
    """The recipe's evaluator is its test split (it reports the epoch it chose there); dev does not peek."""
    from retrieval_pipeline.families.matryoshka.train import build_trainer

    for select_on, dev_size in (("test", 0.0), ("dev", 0.25)):
        family = legal(tmp_path / select_on, data={"dev_size": dev_size}, train={"select_on": select_on})
        family.prepare()
        trainer = build_trainer(family.stage("train"), minilm, tmp_path / select_on / "trainer")
        collection = load_collection(family.paths.prepared)
        assert trainer.args.metric_for_best_model == f"eval_{select_on}_dim_128_ndcg@10"
        assert set(trainer.evaluator.queries["query_id"]) == set(collection.split(select_on)[0]["query_id"])
        assert trainer.evaluator.view == "rows"
