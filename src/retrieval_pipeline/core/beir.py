"""Retrieval collections: BEIR's folder format, read by every family, and the one layout every prepare stage writes.

Prepared data is a Collection whatever the family and the source: corpus (document_id, text), queries (query_id,
text, split) and qrels (query_id, document_id, relevance, split), with the splits named train, dev and test. A
BEIR source is read into one as below.

A BEIR collection is a folder (or the same three parts from the hub) holding
- `corpus.jsonl`: one document per line, {"_id", "text"} and an optional "title";
- `queries.jsonl`: one query per line, {"_id", "text"};
- `qrels/<split>.tsv`: a header row, then query-id, corpus-id and an integer score per line.
Each may be gzipped (`corpus.jsonl.gz`). Lines may end in CRLF and rows may carry extra metadata fields, as real
downloads do. Relevance is graded; a score of 0 means judged not relevant (kept, it counts as non-relevant).

The JSON Lines files are read a block of lines at a time into Arrow, so a large corpus needs about its own size
in memory, not several times it. Every error names the file and the line.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl
import pyarrow as pa

from retrieval_pipeline.core.errors import DataError
from retrieval_pipeline.core.reading import read_hub, require_evaluable
from retrieval_pipeline.core.sources import BeirHub, HubSource, SourceParams

BLOCK_LINES = 50_000
QRELS_COLUMNS = ("query-id", "corpus-id", "score")
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


def find_file(folder: Path, name: str) -> Path | None:
    """`name` or `name.gz` in `folder`."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line, decoded as UTF-8, gzipped or not, CRLF or LF."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8", newline=None) as text:
            number = 0
            while True:
                try:
                    line = text.readline()
                except UnicodeDecodeError as error:
                    raise DataError(f"{path}: line {number + 1}: not valid UTF-8 ({error.reason}); expected UTF-8 "
                                    "text") from error
                if not line:
                    return
                number += 1
                if line.strip():
                    yield number, line
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise DataError(f"{path}: cannot read the file ({error})") from error


def read_texts(path: Path, id_column: str, key: str, title: bool) -> pl.DataFrame:
    """A JSON Lines file of {_id, text[, title]} as (`id_column`, text), a block of lines at a time; the title,
    when present, opens the text as BEIR evaluations do."""
    blocks, ids, texts, seen = [], [], [], set()
    for number, line in _lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}: line {number}: not valid JSON ({error.msg}); expected one JSON object per "
                            "line") from error
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {number}: expected a JSON object with _id and text")
        absent = [field for field in ("_id", "text") if field not in record]
        if absent:
            fields = " or ".join(repr(name) for name in absent)
            raise DataError(f"{path}: line {number}: no {fields} field; expected _id and text on every line, as in a "
                            "BEIR corpus or queries file")
        identifier, text = record["_id"], record["text"]
        if isinstance(identifier, bool) or not isinstance(identifier, (str, int)) or str(identifier).strip() == "":
            raise DataError(f"{path}: line {number}: '_id' is {identifier!r}; expected a non-empty string or integer")
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{path}: line {number}: 'text' is empty; expected non-empty text")
        identifier = str(identifier)
        if identifier in seen:
            raise DataError(f"{path}: line {number}: duplicate _id {identifier!r}; expected each _id once")
        seen.add(identifier)
        heading = record.get("title") if title else None
        ids.append(identifier)
        texts.append(f"{heading.strip()} {text.strip()}" if isinstance(heading, str) and heading.strip()
                     else text.strip())
        if len(ids) == BLOCK_LINES:
            blocks.append(pa.table({id_column: ids, "text": texts}))
            ids, texts = [], []
    blocks.append(pa.table({id_column: pa.array(ids, pa.string()), "text": pa.array(texts, pa.string())}))
    table = pa.concat_tables(blocks)
    if table.num_rows == 0:
        raise DataError(f"{path}: no {key}; expected one JSON object per line")
    return pl.from_arrow(table)


def read_qrels(path: Path) -> pl.DataFrame:
    """A qrels TSV (header row; query-id, corpus-id, integer score) as (query_id, document_id, relevance)."""
    rows = list(_lines(path))
    if not rows:
        raise DataError(f"{path}: empty; expected a header row (query-id, corpus-id, score) and judgements")
    header = rows[0][1].rstrip("\r\n").split("\t")
    if tuple(column.strip() for column in header[:3]) != QRELS_COLUMNS:
        raise DataError(f"{path}: line {rows[0][0]}: header {header!r}; expected the columns "
                        f"{', '.join(QRELS_COLUMNS)} separated by tabs")
    queries, documents, scores = [], [], []
    for number, line in rows[1:]:
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) < 3:
            raise DataError(f"{path}: line {number}: {len(fields)} field(s); expected query-id, corpus-id and "
                            "score separated by tabs")
        try:
            score = int(fields[2])
        except ValueError:
            raise DataError(f"{path}: line {number}: score {fields[2]!r} is not an integer relevance grade") from None
        queries.append(fields[0].strip())
        documents.append(fields[1].strip())
        scores.append(score)
    return pl.DataFrame({"query_id": queries, "document_id": documents, "relevance": scores},
                        schema={"query_id": pl.String, "document_id": pl.String, "relevance": pl.Int64})


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


def read_beir_folder(folder: Path, splits: Mapping[str, str], optional: Mapping[str, str] = {}) -> Collection:
    """A BEIR folder with qrels for every split in `splits` (and those of `optional` that exist), each given as
    collection split -> the folder's name for it (qrels/<name>.tsv), in canonical order."""
    names = {**splits, **optional}
    expected = (f"expected a BEIR folder with corpus.jsonl, queries.jsonl and "
                f"qrels/{{{','.join(splits.values())}}}.tsv (each may be gzipped)")
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder; {expected}")
    paths = {}
    for name, file in (("corpus", "corpus.jsonl"), ("queries", "queries.jsonl"),
                       *((split, f"qrels/{name}.tsv") for split, name in names.items())):
        found = find_file(folder, file)
        if found is None and name not in optional:
            raise DataError(f"{folder / file}: missing; {expected}")
        if found is not None:
            paths[name] = found
    return collection_from_files(paths["corpus"], paths["queries"],
                                 {split: paths[split] for split in names if split in paths})


def collection_from_files(corpus: Path, queries: Path, qrels: Mapping[str, Path]) -> Collection:
    """A collection from BEIR's files: corpus and queries JSON Lines, a qrels TSV per split."""
    documents = read_texts(corpus, "document_id", "documents", title=True)
    questions = read_texts(queries, "query_id", "queries", title=False)
    judged = []
    for split, path in qrels.items():
        rows = checked_qrels(read_qrels(path), documents, questions, str(path), first_line=2)
        judged.append(rows.with_columns(split=pl.lit(split)))
    return Collection(documents, questions, canonical_order(pl.concat(judged)))


HUB_FILES = {"corpus": ("corpus.jsonl", "corpus.jsonl.gz"), "queries": ("queries.jsonl", "queries.jsonl.gz")}


def hub_file(repo: str, revision: str | None, names: Sequence[str]) -> Path | None:
    """The first of `names` that the hub dataset repository holds at `revision`, from the Hugging Face cache or
    downloaded; None when it holds none of them (or cannot be reached)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    for name in names:
        try:
            return Path(hf_hub_download(repo, name, repo_type="dataset", revision=revision))
        except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError):
            continue
    return None


def read_beir_hub(corpus: HubSource, queries: HubSource, qrels: HubSource, splits: Mapping[str, str],
                  optional: Mapping[str, str] = {}) -> Collection:
    """A BEIR collection from the hub repositories' own files (corpus.jsonl[.gz], queries.jsonl[.gz] and a
    <split>.tsv per qrels split, those of `optional` where they exist), read like a BEIR folder: BEIR's repositories
    ship these files beside a loading script that `datasets` no longer runs. One missing: DataError (the caller may
    try `datasets`)."""
    found = {kind: hub_file(source.path, source.revision, HUB_FILES[kind])
             for kind, source in (("corpus", corpus), ("queries", queries))}
    judged = {split: hub_file(qrels.path, qrels.revision, (f"{name}.tsv", f"qrels/{name}.tsv"))
              for split, name in {**splits, **optional}.items()}
    missing = [f"{source.path}: {' or '.join(HUB_FILES[kind])}" for kind, source in
               (("corpus", corpus), ("queries", queries)) if found[kind] is None]
    missing += [f"{qrels.path}: {name}.tsv" for split, name in splits.items() if judged[split] is None]
    if missing:
        raise DataError(f"no BEIR files in the hub repositories ({'; '.join(missing)})")
    return collection_from_files(found["corpus"], found["queries"],
                                 {split: path for split, path in judged.items() if path is not None})


def read_hub_collection(hub: BeirHub, splits: Mapping[str, str], optional: Mapping[str, str] = {}) -> Collection:
    """A BEIR collection on the hub: the repositories' own BEIR files (BEIR's repositories hold them beside a
    loading script, which `datasets` no longer runs), else the datasets as `datasets` loads them (parquet, or the
    hub's parquet conversion when the revision names it), a qrels split of `optional` only where it loads; one error
    naming both attempts when neither works."""
    try:
        return read_beir_hub(hub.corpus, hub.queries, hub.qrels, splits, optional)
    except DataError as files_error:
        try:
            corpus, corpus_origin = read_hub(hub.corpus)
            queries, queries_origin = read_hub(hub.queries)
            loaded = {split: read_hub(hub.qrels.model_copy(update={"split": name})) for split, name in splits.items()}
        except DataError as datasets_error:
            raise DataError(f"{hub.corpus.path}: cannot read the BEIR collection: tried its files ({files_error}) and "
                            f"`datasets` ({datasets_error}); expected corpus.jsonl[.gz], queries.jsonl[.gz] and "
                            f"<split>.tsv qrels in the repositories, or datasets `datasets` can load (pin a revision "
                            "such as refs/convert/parquet in the hub sources' revision for the hub's parquet "
                            "conversion)") from datasets_error
    for split, name in optional.items():
        try:
            loaded[split] = read_hub(hub.qrels.model_copy(update={"split": name}))
        except DataError:
            continue  # the collection has no such split: the caller makes one (a share of train) where it needs it
    origins = {"corpus": corpus_origin, "queries": queries_origin,
               **{split: origin for split, (_, origin) in loaded.items()}}
    return collection_from_frames(corpus, queries, {split: frame for split, (frame, _) in loaded.items()}, origins)


def read_beir_source(source: SourceParams, dev: bool) -> tuple[Collection, str]:
    """A family's data source that is a BEIR collection (a folder, or a dataset on the hub), with its train and test
    qrels and, with `dev`, its dev qrels where it has them; and where it came from, for messages."""
    names = source.local.splits if source.source == "local" else source.hf_beir.splits
    splits, optional = {"train": names.train, "test": names.test}, {"dev": names.dev} if dev else {}
    if source.source == "local":
        return read_beir_folder(source.local.path, splits, optional), f"BEIR folder {source.local.path}"
    return read_hub_collection(source.hf_beir, splits, optional), source.hf_beir.describe()


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
