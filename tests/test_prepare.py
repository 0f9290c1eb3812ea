from __future__ import annotations

import polars as pl
import pytest
from helpers import FIXTURES, TINY_MATRYOSHKA, run_stages, write_params

from retrieval_pipeline.core.collection import load_collection
from retrieval_pipeline.core.errors import DataError
from retrieval_pipeline.core.params import deep_merge

HUB_FIXTURE = FIXTURES / "hub" / "legal-rag-positives-synthetic"


def prepared(tmp_path, overrides=None):
    """The prepared collection: training pairs, the corpus, and the held-out (dev and test) queries and qrels."""
    write_params(tmp_path, deep_merge(TINY_MATRYOSHKA, overrides or {}))
    run_stages("matryoshka", ["prepare"], tmp_path)
    collection = load_collection(tmp_path / "data/matryoshka/prepared")
    held_out = pl.col("split") != "train"
    return {"train": collection.pairs("train"), "corpus": collection.corpus,
            "queries": collection.judged_queries().filter(held_out), "qrels": collection.qrels.filter(held_out)}


def local_source(path, columns=None):
    columns = columns or {"anchor": "question", "positive": "text", "chunk_id": "global_chunk_id"}
    return {"matryoshka": {"embedded": {"data": {"source": "local", "local": {"path": str(path)},
                                                 "columns": columns, "test_size": 0.25, "dev_size": 0.0}}}}


def test_split_is_seeded_disjoint_and_judged_by_chunk_id(tmp_path):
    tables = prepared(tmp_path)
    train, corpus, queries, qrels = tables["train"], tables["corpus"], tables["queries"], tables["qrels"]
    total = train.height + queries.height
    assert queries.filter(pl.col("split") == "test").height == round(total * 0.1)
    assert set(train["query_id"]).isdisjoint(queries["query_id"])
    # every chunk is in the corpus, held-out chunks included
    assert set(train["document_id"]) | set(qrels["document_id"]) == set(corpus["document_id"])
    assert corpus["document_id"].is_unique().all()
    assert qrels.height == queries.height and set(qrels["query_id"]) == set(queries["query_id"])
    assert (qrels["relevance"] == 1).all()
    again = prepared(tmp_path / "again")
    assert again["queries"].equals(queries) and again["train"].equals(train)


def test_hub_source_reads_the_datasets_exact_columns(tmp_path):
    hub = {"matryoshka": {"embedded": {"data": {"source": "hf", "hf": {"path": str(HUB_FIXTURE), "split": "train"},
                                                "test_size": 0.25, "dev_size": 0.0}}}}
    tables = prepared(tmp_path, hub)
    source = pl.read_csv(HUB_FIXTURE / "train.csv")
    assert tables["train"].height + tables["queries"].height == source.height
    assert tables["corpus"].height == source["global_chunk_id"].n_unique()
    assert set(tables["train"]["query"]) <= set(source["question"])


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "parquet"])
def test_local_files_in_every_format(tmp_path, suffix):
    frame = pl.read_csv(HUB_FIXTURE / "train.csv")
    path = tmp_path / f"pairs.{suffix}"
    {"csv": frame.write_csv, "jsonl": frame.write_ndjson, "parquet": frame.write_parquet}[suffix](path)
    tables = prepared(tmp_path, local_source(path))
    assert tables["corpus"].height == 6


def write_csv(path, rows, header="question,text,global_chunk_id"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(("rows", "columns", "message"), [
    (["a?,chunk one,1", "b?,chunk two,2"], {"anchor": "query", "positive": "text", "chunk_id": "global_chunk_id"},
     r"pairs.csv: missing column\(s\) query named in matryoshka.embedded.data.columns; "
     r"the file has: question, text, global_chunk_id"),
    (["a?,chunk one,1", "b?,,2", "c?,chunk three,3"], None, r"pairs.csv: row 2: column 'text' is empty"),
    (["a?,chunk one,1", "   ,chunk two,2"], None, r"pairs.csv: row 2: column 'question' is empty"),
    (["a?,chunk one,1", "b?,another text,1"], None, r"pairs.csv: rows 1, 2: chunk_id '1' has different positive texts"),
])
def test_bad_rows_are_reported_with_file_and_row(tmp_path, rows, columns, message):
    path = write_csv(tmp_path / "pairs.csv", rows)
    with pytest.raises(DataError, match=message):
        prepared(tmp_path, local_source(path, columns))
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.parquet"))


def test_duplicate_query_ids(tmp_path):
    path = write_csv(tmp_path / "pairs.csv", ["7,a?,chunk one,1", "8,b?,chunk two,2", "7,c?,chunk three,3"],
                     header="qid,question,text,global_chunk_id")
    columns = {"anchor": "question", "positive": "text", "chunk_id": "global_chunk_id", "query_id": "qid"}
    with pytest.raises(DataError, match=r"rows 1, 3: duplicate query_id '7'"):
        prepared(tmp_path, local_source(path, columns))


def test_non_utf8_file_names_the_line(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_bytes(b"question,text,global_chunk_id\na?,chunk one,1\nb?,caf" + b"\xe9 text,2\n")
    with pytest.raises(DataError, match=r"pairs.csv: line 3: not valid UTF-8 \(byte 0xe9\)"):
        prepared(tmp_path, local_source(path))


def test_unreadable_and_unknown_files(tmp_path):
    with pytest.raises(DataError, match=r"missing.csv: cannot read the file"):
        prepared(tmp_path, local_source(tmp_path / "missing.csv"))
    (tmp_path / "pairs.txt").write_text("x")
    with pytest.raises(DataError, match=r"pairs.txt: unknown file type '.txt'"):
        prepared(tmp_path, local_source(tmp_path / "pairs.txt"))
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match=r"broken.parquet: not a readable parquet file"):
        prepared(tmp_path, local_source(tmp_path / "broken.parquet"))


def test_failed_prepare_keeps_the_previous_output(tmp_path):
    good = prepared(tmp_path)
    path = write_csv(tmp_path / "pairs.csv", ["a?,,1"])
    with pytest.raises(DataError):
        prepared(tmp_path, local_source(path))
    assert load_collection(tmp_path / "data/matryoshka/prepared").pairs("train").equals(good["train"])
    assert not list((tmp_path / "data/matryoshka").rglob("*.partial-*"))
