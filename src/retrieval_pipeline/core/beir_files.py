"""BEIR's folder format, read into a Collection (core/collection.py):
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
import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import polars as pl
import pyarrow as pa

from retrieval_pipeline.core.collection import QRELS_COLUMNS, Collection, canonical_order, checked_qrels
from retrieval_pipeline.core.errors import DataError

BLOCK_LINES = 50_000


def find_file(folder: Path, name: str) -> Path | None:
    """`name` or `name.gz` in `folder`."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line, decoded as UTF-8, gzipped or not, CRLF or LF. Each line is
    decoded on its own, so an invalid byte is reported on its own line (a decoder reading ahead by blocks would
    name the line where its block started)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as raw:
            for number, encoded in enumerate(raw, start=1):
                try:
                    line = encoded.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise DataError(f"{path}: line {number}: not valid UTF-8 (byte 0x{encoded[error.start]:02x} at "
                                    f"column {error.start + 1}); expected UTF-8 text") from error
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
