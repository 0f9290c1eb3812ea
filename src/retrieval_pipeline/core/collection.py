"""The one layout every prepare stage writes, whatever the family and the source: a Collection of corpus
(document_id, text), queries (query_id, text, split) and qrels (query_id, document_id, relevance, split), its splits
named train, dev and test; and what every family does with one (its splits, the checks a source's judgements pass,
the dev split a family trains with)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl

from retrieval_pipeline.core.errors import DataError
from retrieval_pipeline.core.reading import require_evaluable

QRELS_COLUMNS = ("query-id", "corpus-id", "score")  # BEIR's names for a judgement's fields
SPLITS = ("train", "dev", "test")
CANDIDATES = ("corpus", "judged")


@dataclass(frozen=True)
class Collection:
    """corpus (document_id, text), queries (query_id, text), qrels (query_id, document_id, relevance, split).

    `candidates`: what a query's ranking is drawn from, the whole corpus (a retrieval collection) or the documents
    judged for it (a context of its own, as LongRAG gives each question)."""

    corpus: pl.DataFrame
    queries: pl.DataFrame
    qrels: pl.DataFrame
    candidates: str = "corpus"

    def split(self, name: str) -> tuple[pl.DataFrame, dict[str, dict[str, int]]]:
        """The queries judged in split `name` and their qrels ({query: {document: relevance}})."""
        qrels = self.qrels.filter(pl.col("split") == name)
        return self.queries.filter(pl.col("query_id").is_in(qrels["query_id"].unique().implode())), qrels_dict(qrels)

    @property
    def splits(self) -> list[str]:
        return list(dict.fromkeys(self.qrels["split"]))

    def positives(self, name: str) -> pl.DataFrame:
        """(query_id, document_id, relevance) of split `name`'s relevant pairs (relevance above 0)."""
        return self.qrels.filter((pl.col("split") == name) & (pl.col("relevance") > 0)).drop("split")

    def judged_queries(self) -> pl.DataFrame:
        """(query_id, text, split) of every judged query; a query judged in two splits would leak between them."""
        splits = self.qrels.select("query_id", "split").unique(maintain_order=True)
        twice = splits.filter(pl.col("query_id").is_duplicated())
        if twice.height:
            query = twice["query_id"][0]
            splits_of_query = ", ".join(twice.filter(pl.col("query_id") == query)["split"])
            raise DataError(f"query-id {query!r} is judged in splits {splits_of_query}; "
                            "expected each query in one split, so that no test query is trained on")
        return self.queries.join(splits, on="query_id", how="inner", maintain_order="left")

    def pairs(self, name: str) -> pl.DataFrame:
        """(query_id, query, document_id, document): a row per relevant judgement of split `name`, in the qrels'
        order, with both texts (what a bi-encoder trains on)."""
        return self.positives(name).join(self.queries.rename({"text": "query"}), on="query_id",
                                         maintain_order="left").join(
            self.corpus.rename({"text": "document"}), on="document_id", maintain_order="left").select(
            "query_id", "query", "document_id", "document")

    def summary(self) -> str:
        """Its size for the stage's log line: training pairs and queries, held-out queries, documents."""
        counts = dict(self.judged_queries()["split"].value_counts().iter_rows())
        held_out = ", ".join(f"{counts[split]} {split} queries" for split in SPLITS[1:] if counts.get(split))
        pairs = self.positives("train")
        return (f"{pairs.height} training pairs ({pairs['query_id'].n_unique()} queries), {held_out}, "
                f"corpus {self.corpus.height} documents")


def write_collection(collection: Collection, folder: Path) -> None:
    """corpus.parquet, queries.parquet (judged queries, with their split), qrels.parquet (in the collection's own
    order, which the stages keep) and collection.json, in `folder`."""
    collection.corpus.write_parquet(folder / "corpus.parquet")
    collection.judged_queries().write_parquet(folder / "queries.parquet")
    collection.qrels.write_parquet(folder / "qrels.parquet")
    (folder / "collection.json").write_text(json.dumps({"candidates": collection.candidates}) + "\n")


def load_collection(folder: Path) -> Collection:
    """A collection prepare wrote with write_collection."""
    return Collection(pl.read_parquet(folder / "corpus.parquet"),
                      pl.read_parquet(folder / "queries.parquet").select("query_id", "text"),
                      pl.read_parquet(folder / "qrels.parquet"),
                      json.loads((folder / "collection.json").read_text(encoding="utf-8"))["candidates"])


def qrels_dict(qrels: pl.DataFrame) -> dict[str, dict[str, int]]:
    judged: dict[str, dict[str, int]] = {}
    for query, document, relevance in qrels.select("query_id", "document_id", "relevance").iter_rows():
        judged.setdefault(query, {})[document] = relevance
    return judged


def checked_qrels(qrels: pl.DataFrame, corpus: pl.DataFrame, queries: pl.DataFrame, origin: str,
                  first_line: int) -> pl.DataFrame:
    """The judgements with every judged query and document known and each (query, document) pair judged once:
    the same pair with two grades is an error naming both lines, an exact repeat is kept once and counted. Errors
    name the line (`first_line`: the line of the first row)."""
    numbered = qrels.with_row_index("row")
    unknown = numbered.filter(~pl.col("query_id").is_in(queries["query_id"].implode()))
    if unknown.height:
        raise DataError(f"{origin}: line {unknown['row'][0] + first_line}: query-id {unknown['query_id'][0]!r} is not "
                        "in the queries")
    unknown = numbered.filter(~pl.col("document_id").is_in(corpus["document_id"].implode()))
    if unknown.height:
        raise DataError(f"{origin}: line {unknown['row'][0] + first_line}: corpus-id {unknown['document_id'][0]!r} "
                        "is not in the corpus")
    pairs = numbered.group_by("query_id", "document_id", maintain_order=True).agg(
        pl.col("row"), pl.col("relevance").n_unique().alias("grades"))
    contradicted = pairs.filter(pl.col("grades") > 1)
    if contradicted.height:
        first, *others = contradicted["row"][0]
        grades = numbered["relevance"]
        second = next(row for row in others if grades[row] != grades[first])
        raise DataError(f"{origin}: line {second + first_line}: query-id {contradicted['query_id'][0]!r}, corpus-id "
                        f"{contradicted['document_id'][0]!r} judged {grades[second]}, but {grades[first]} on line "
                        f"{first + first_line}; expected one grade per pair")
    repeats = qrels.height - pairs.height
    if repeats:
        print(f"prepare: {origin}: {repeats} repeated judgement(s) (same query, document and grade) kept once")
        qrels = qrels.unique(["query_id", "document_id"], keep="first", maintain_order=True)
    return qrels


def canonical_order(qrels: pl.DataFrame) -> pl.DataFrame:
    """A BEIR source's judgements in one order whatever the file's: by split, query and document."""
    return qrels.sort("split", "query_id", "document_id")


def collection_from_frames(corpus: pl.DataFrame, queries: pl.DataFrame, qrels: dict[str, pl.DataFrame],
                           origins: dict[str, str], first_line: int = 1) -> Collection:
    """A collection from frames with BEIR's columns (a hub dataset, a generated one); errors name the origin and
    the row (`first_line`: the line of the first row)."""
    frames = {}
    for kind, frame, id_column in (("corpus", corpus, "document_id"), ("queries", queries, "query_id")):
        missing = [column for column in ("_id", "text") if column not in frame.columns]
        if missing:
            raise DataError(f"{origins[kind]}: missing column(s) {', '.join(missing)}; a BEIR {kind} has _id and "
                            f"text (got {', '.join(frame.columns) or 'no columns'})")
        title = (pl.col("title").cast(pl.String).fill_null("") if kind == "corpus" and "title" in frame.columns
                 else pl.lit(""))
        rows = frame.with_row_index("row").select(
            "row", pl.col("_id").cast(pl.String).alias(id_column), pl.col("text").cast(pl.String).alias("body"),
            title.alias("title"))
        bad = rows.filter(pl.col(id_column).is_null() | (pl.col(id_column).str.strip_chars() == "")
                          | pl.col("body").is_null() | (pl.col("body").str.strip_chars() == ""))
        if bad.height:
            column = "_id" if not (bad[id_column][0] or "").strip() else "text"
            raise DataError(f"{origins[kind]}: line {bad['row'][0] + first_line}: '{column}' is empty; expected "
                            "non-empty text")
        duplicated = rows.filter(pl.col(id_column).is_duplicated())
        if duplicated.height:
            raise DataError(f"{origins[kind]}: line {duplicated['row'][1] + first_line}: duplicate _id "
                            f"{duplicated[id_column][0]!r}")
        frames[kind] = rows.select(id_column, pl.concat_str([pl.col("title"), pl.col("body")], separator=" ")
                                   .str.strip_chars().alias("text"))
    judged = []
    for split, frame in qrels.items():
        missing = [column for column in QRELS_COLUMNS if column not in frame.columns]
        if missing:
            raise DataError(f"{origins[split]}: missing column(s) {', '.join(missing)}; a BEIR qrels file has "
                            f"{', '.join(QRELS_COLUMNS)} (got {', '.join(frame.columns) or 'no columns'})")
        scores = frame["score"].cast(pl.Int64, strict=False)
        bad = frame.with_row_index("row").filter(scores.is_null())
        if bad.height:
            raise DataError(f"{origins[split]}: line {bad['row'][0] + first_line}: score {bad['score'][0]!r} is not "
                            "an integer relevance grade")
        rows = pl.DataFrame({"query_id": frame["query-id"].cast(pl.String),
                             "document_id": frame["corpus-id"].cast(pl.String), "relevance": scores})
        rows = checked_qrels(rows, frames["corpus"], frames["queries"], origins[split], first_line)
        judged.append(rows.with_columns(split=pl.lit(split)))
    return Collection(frames["corpus"], frames["queries"], canonical_order(pl.concat(judged)))


def with_dev_split(collection: Collection, dev_size: float, seed: int) -> Collection:
    """The collection with a dev split: its own dev qrels when it has them, else `dev_size` of the training
    queries (seeded), moved out of training."""
    import numpy as np

    if "dev" in collection.splits or dev_size == 0:
        return collection
    qrels = collection.qrels
    training_queries = qrels.filter(pl.col("split") == "train")["query_id"].unique(maintain_order=True).sort()
    order = np.random.default_rng(seed).permutation(len(training_queries))
    chosen = training_queries.gather(order[:round(len(training_queries) * dev_size)])
    moved = (pl.col("split") == "train") & pl.col("query_id").is_in(chosen.implode())
    return replace(collection, qrels=qrels.with_columns(
        split=pl.when(moved).then(pl.lit("dev")).otherwise(pl.col("split"))))


def for_training(collection: Collection, dev_size: float, seed: int, origin: str) -> Collection:
    """The collection as a family trains and evaluates on it: training pairs from the train qrels, the test split
    held out, and a dev split (the collection's own, else `dev_size` of the training queries, seeded)."""
    cut = with_dev_split(collection, dev_size, seed)
    require_trainable(cut, origin)
    return cut


def require_trainable(collection: Collection, origin: str) -> None:
    """Training judgements and a test split to evaluate on, checked where the collection is read rather than in
    the stage that first needs them."""
    if collection.positives("train").is_empty():
        raise DataError(f"{origin}: the train qrels hold no relevant pair (score above 0); expected training "
                        "judgements")
    require_evaluable(collection.positives("test")["query_id"].n_unique(), collection.corpus.height, origin, "test")
