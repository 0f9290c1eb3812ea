"""Seeded train/dev/test splits over rows."""

from __future__ import annotations

import numpy as np
import polars as pl

from retrieval_pipeline.core.errors import DataError


def add_split_column(frame: pl.DataFrame, test_size: float, dev_size: float, seed: int, origin: str,
                     keys: str) -> pl.DataFrame:
    """Shuffle with `seed`; `test_size` of the rows are test, `dev_size` of the rest dev, the others train. `keys`
    names the params keys of the two sizes, for the error."""
    order = np.random.default_rng(seed).permutation(frame.height)
    n_test = max(1, round(frame.height * test_size))
    rest = order[n_test:]
    n_dev = round(len(rest) * dev_size)
    if len(rest) - n_dev < 2:
        raise DataError(f"{origin}: {frame.height} rows leave {len(rest) - n_dev} for training; "
                        f"expected at least 2 (lower {keys} or add rows)")
    labels = np.full(frame.height, "train", dtype=object)
    labels[order[:n_test]] = "test"
    labels[rest[:n_dev]] = "dev"
    return frame.with_columns(split=pl.Series(labels.tolist(), dtype=pl.String))


def split_counts(frame: pl.DataFrame) -> str:
    counts = dict(frame["split"].value_counts().iter_rows())
    return ", ".join(f"{split} {counts.get(split, 0)}" for split in ("train", "dev", "test"))
