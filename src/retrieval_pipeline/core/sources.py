"""Where a family's data comes from, as params: the synthetic world, a Hugging Face hub dataset or local files."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveInt, model_validator

from retrieval_pipeline.core.params import Section


class HubSource(Section):
    path: str = Field(min_length=1)
    name: str | None = None
    split: str = "train"
    revision: str | None = None

    def describe(self) -> str:
        return f"hf:{self.path}" + (f"/{self.name}" if self.name else "") + f"[{self.split}]"


class CollectionSplits(Section):
    """The qrels splits of a BEIR folder: training pairs, checkpoint selection (optional) and evaluation."""

    train: str = "train"
    dev: str = "dev"
    test: str = "test"


class LocalSource(Section):
    path: Path
    format: Literal["auto", "csv", "jsonl", "parquet", "beir"] = "auto"  # auto: a folder is a BEIR collection
    splits: CollectionSplits = CollectionSplits()  # a BEIR folder's qrels splits

    def is_collection(self) -> bool:
        return self.format == "beir" or (self.format == "auto" and self.path.is_dir())


class SyntheticSource(Section):
    facilities: PositiveInt = 48
    companies: PositiveInt = 8
    questions_per_chunk: PositiveInt = 3


class SourceParams(Section):
    source: Literal["synthetic", "hf", "local"]
    hf: HubSource | None = None
    local: LocalSource | None = None
    synthetic: SyntheticSource = SyntheticSource()

    @model_validator(mode="after")
    def _selected_source_is_configured(self) -> SourceParams:
        if self.source == "hf" and self.hf is None:
            raise ValueError("source is 'hf' but the 'hf' section (path, name, split) is missing")
        if self.source == "local" and self.local is None:
            raise ValueError("source is 'local' but the 'local' section (path, format) is missing")
        return self

    def describe(self) -> str:
        """Where the rows come from, as error messages and model cards name it."""
        if self.source == "hf":
            return self.hf.describe()
        if self.source == "local":
            return str(self.local.path)
        return "synthetic world"

    def hub_datasets(self) -> list[str]:
        return [self.hf.path] if self.source == "hf" else []

    def is_collection(self) -> bool:
        """A BEIR folder rather than a file of rows."""
        return self.source == "local" and self.local.is_collection()
