"""Reading a family's raw rows from the synthetic world, the Hugging Face hub or local files.

Whatever the source, prepare receives a polars frame with the family's own column
names, or a DataError that names the file, the row or the params key at fault.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import polars as pl

from retrieval_pipeline.core.errors import DataError
from retrieval_pipeline.core.sources import HubSource, SourceParams, SyntheticSource

SyntheticRows = Callable[[SyntheticSource, int], list[dict]]


def read_source(params: SourceParams, seed: int, synthetic_rows: SyntheticRows,
                key: str) -> tuple[pl.DataFrame, str]:
    """The raw rows and a name for where they came from, used in every error message. `key` names the source's
    params key (e.g. matryoshka.embedded.data), for a message that asks for a setting."""
    if params.source == "synthetic":
        return pl.DataFrame(synthetic_rows(params.synthetic, seed)), params.describe()
    if params.source == "hf":
        return read_hub(params.hf)
    return read_local_file(params.local.path, params.local.format, f"{key}.local.format"), params.describe()


def read_hub(hub: HubSource) -> tuple[pl.DataFrame, str]:
    """One split of a hub dataset (or of the `datasets` cache, offline) and its name for error messages."""
    from datasets import load_dataset

    origin = hub.describe()
    try:
        dataset = load_dataset(hub.path, hub.name, split=hub.split, revision=hub.revision)
    except (FileNotFoundError, ValueError, ConnectionError, RuntimeError) as error:  # RuntimeError: a script dataset
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(f"{origin}: cannot load the dataset: {reason}") from error
    return dataset.to_polars(), origin


def _line_of(raw: bytes, offset: int) -> int:
    return raw.count(b"\n", 0, offset) + 1


def read_local_file(path: Path, file_format: str, format_key: str) -> pl.DataFrame:
    """A CSV, JSON Lines or parquet file as a frame with at least one row; strict UTF-8 for the text formats."""
    frame = _read_local_file(path, file_format, format_key)
    if frame.is_empty():
        raise DataError(f"{path}: no rows (at most a header); expected a row per pair")
    return frame


def _read_local_file(path: Path, file_format: str, format_key: str) -> pl.DataFrame:
    if file_format == "auto":
        suffixes = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
        file_format = suffixes.get(path.suffix.lower(), "")
        if not file_format:
            raise DataError(f"{path}: unknown file type '{path.suffix}'; expected .csv, .jsonl or .parquet "
                            f"(or set {format_key})")
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read the file ({error.strerror})") from error
    if file_format == "parquet":
        try:
            return pl.read_parquet(raw)
        except Exception as error:  # polars raises several unrelated types for a corrupt file
            raise DataError(f"{path}: not a readable parquet file ({error})") from error
    if not raw.strip():  # the readers' own messages for this name neither the file nor the fix
        expected = "a header row, then a row per pair" if file_format == "csv" else "one JSON object per line"
        raise DataError(f"{path}: empty ({len(raw)} bytes); expected {expected}")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: line {_line_of(raw, error.start)}: not valid UTF-8 "
                        f"(byte 0x{raw[error.start]:02x}); expected UTF-8 text") from error
    try:
        if file_format == "csv":
            return pl.read_csv(raw, infer_schema=False)
        return pl.read_ndjson(raw)
    except Exception as error:
        where = _first_bad_line(raw.decode("utf-8"), file_format)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(f"{path}: {where or f'not a readable {file_format.upper()} file ({reason})'}") from error


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON; expected a string, a number or null")


def _first_bad_line(text: str, file_format: str) -> str | None:
    """Where a CSV or JSON Lines file stops parsing: 'line N: ...', found line by line as the fast reader cannot
    say."""
    import csv
    import io
    import json

    if file_format == "jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                if not isinstance(json.loads(line, parse_constant=_reject_constant), dict):
                    return f"line {number}: expected a JSON object"
            except json.JSONDecodeError as error:
                return f"line {number}: not valid JSON ({error.msg}); expected one JSON object per line"
            except ValueError as error:
                return f"line {number}: {error}"
        return None
    rows = csv.reader(io.StringIO(text, newline=""))
    header = next(rows, [])
    try:
        for row in rows:
            if row and len(row) != len(header):
                return f"line {rows.line_num}: {len(row)} fields; expected {len(header)}, as the header has"
    except csv.Error as error:
        return f"line {rows.line_num}: {error}"
    return None


def map_columns(frame: pl.DataFrame, mapping: Mapping[str, str], origin: str, params_key: str) -> pl.DataFrame:
    """Rename the source's columns to the family's names, keeping only the mapped ones."""
    missing = [source for source in mapping.values() if source not in frame.columns]
    if missing:
        raise DataError(f"{origin}: missing column(s) {', '.join(missing)} named in {params_key}; "
                        f"the file has: {', '.join(frame.columns) or 'no columns'}")
    return frame.select([pl.col(source).alias(target) for target, source in mapping.items()])


def require_ids(frame: pl.DataFrame, columns: dict[str, str], origin: str) -> None:
    """Id columns (family name -> source column name) hold strings or integers: a float id (what a CSV or
    parquet column with a missing value becomes) would turn into "NaN" or "12.0" and silently match nothing."""
    for column, source in columns.items():
        if column in frame.columns and frame[column].dtype.is_float():
            bad = frame.with_row_index("row").filter(pl.col(column).is_nan() | pl.col(column).is_null()
                                                     | (pl.col(column) != pl.col(column).round(0)))
            shown = f"row {bad['row'][0] + 1} is {bad[column][0]!r}" if bad.height else f"row 1 is {frame[column][0]!r}"
            raise DataError(f"{origin}: column '{source}' holds floating-point numbers ({shown}); expected ids "
                            "that are strings or integers")


def require_evaluable(queries: int, documents: int, origin: str, split: str = "test") -> None:
    """An evaluation needs queries with a relevant document and a corpus with a choice in it: no queries would
    mean no metrics, a single document a perfect score."""
    if queries == 0:
        raise DataError(f"{origin}: the {split} split has no query with a relevant document (relevance above 0); "
                        "expected judged queries to evaluate on")
    if documents < 2:
        raise DataError(f"{origin}: the corpus has {documents} distinct document(s); expected at least 2, or every "
                        "ranking is perfect")


def require_text(frame: pl.DataFrame, columns: list[str], origin: str,
                 source_names: Mapping[str, str] = {}) -> pl.DataFrame:
    """Cast to strings and reject null or blank values, naming the first bad row (1-based) and the column as the
    file names it (`source_names`: family name -> source column)."""
    frame = frame.with_columns([pl.col(column).cast(pl.String) for column in columns])
    for column in columns:
        blank = frame.with_row_index("row").filter(
            pl.col(column).is_null() | (pl.col(column).str.strip_chars() == ""))
        if blank.height:
            row = blank["row"][0] + 1
            raise DataError(f"{origin}: row {row}: column '{source_names.get(column, column)}' is empty; expected "
                            "non-empty text "
                            f"({blank.height} such row(s))")
    return frame


def require_unique(frame: pl.DataFrame, column: str, origin: str) -> None:
    duplicated = frame.with_row_index("row").filter(pl.col(column).is_duplicated())
    if duplicated.height:
        value = duplicated[column][0]
        rows = duplicated.filter(pl.col(column) == value)["row"].to_list()
        raise DataError(f"{origin}: rows {', '.join(str(r + 1) for r in rows)}: duplicate {column} {value!r}; "
                        f"expected each {column} once")


def require_consistent(frame: pl.DataFrame, key: str, value: str, origin: str) -> None:
    """Rows sharing `key` must share `value` (e.g. one chunk id, one chunk text)."""
    conflicts = frame.with_row_index("row").filter(pl.col(value).n_unique().over(key) > 1)
    if conflicts.height:
        first = conflicts[key][0]
        rows = conflicts.filter(pl.col(key) == first)["row"].to_list()
        raise DataError(f"{origin}: rows {', '.join(str(r + 1) for r in rows[:5])}: {key} {first!r} has different "
                        f"{value} texts; expected one {value} per {key}")
