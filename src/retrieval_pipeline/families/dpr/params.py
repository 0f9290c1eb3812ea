"""DPR's params: the recipe's keys, validated before any stage runs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt

from retrieval_pipeline.core.params import FamilyParams, Section, TrainingSection
from retrieval_pipeline.core.sources import Reference, SourceParams


class Columns(Section):
    query: str
    passage: str
    label: str | None = None


class DataParams(SourceParams):
    columns: Columns
    keep_labels: list[int] = Field(min_length=1)  # rows whose label is in this list are kept
    test_size: float = Field(gt=0, lt=1)


class ModelParams(Section):
    base: Reference
    max_seq_length: PositiveInt | None = None


class MineParams(Section):
    top_k: PositiveInt
    relative_margin: float = Field(ge=0, lt=1)
    batch_size: PositiveInt


class TrainParams(TrainingSection):
    use_hard_negatives: bool
    hard_negative_source: Literal["bm25", "dense"]
    temperature: PositiveFloat
    epochs: PositiveInt
    learning_rate: PositiveFloat
    weight_decay: float = Field(ge=0)


class EvaluateParams(Section):
    batch_size: PositiveInt
    top_k: PositiveInt = Field(ge=100)


class DprParams(FamilyParams):
    data: DataParams
    model: ModelParams
    mine: MineParams
    train: TrainParams
    evaluate: EvaluateParams
