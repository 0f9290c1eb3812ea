"""Matryoshka's params: the recipe's keys, validated before any stage runs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt, field_validator, model_validator

from retrieval_pipeline.core.params import FamilyParams, Section, TrainingSection
from retrieval_pipeline.core.sources import Reference, SourceParams


class Columns(Section):
    """Which source column feeds each role; query_id is optional (row numbers otherwise)."""

    anchor: str
    positive: str
    chunk_id: str
    query_id: str | None = None


class DataParams(SourceParams):
    columns: Columns
    test_size: float = Field(gt=0, lt=1)
    dev_size: float = Field(ge=0, lt=1)
    # rows: the source's rows are split (the recipe's train_test_split); questions: a question asked in several rows
    # stays on one side of the split
    split_by: Literal["rows", "questions"]


class ModelParams(Section):
    base: Reference
    dims: list[PositiveInt] = Field(min_length=1)
    max_seq_length: PositiveInt | None = None
    trust_remote_code: bool = False

    @field_validator("dims")
    @classmethod
    def _dims_descend(cls, dims: list[int]) -> list[int]:
        if any(later >= earlier for earlier, later in zip(dims, dims[1:])):
            raise ValueError(f"expected distinct dims from largest to smallest, e.g. [768, 512, 256] (got {dims})")
        return dims


class MineParams(Section):
    num_negatives: PositiveInt
    range_max: PositiveInt
    relative_margin: float = Field(ge=0, lt=1)
    batch_size: PositiveInt


class TrainParams(TrainingSection):
    use_hard_negatives: bool
    # The order the trainer gets a pair's columns in: MultipleNegativesRankingLoss takes the first as the anchor.
    # [positive, anchor] is the recipe's run (chunk -> question); [anchor, positive] trains question -> chunk. Mined
    # negatives are chunks, so with use_hard_negatives the question anchors whatever this says.
    loss_columns: tuple[Literal["anchor", "positive"], Literal["anchor", "positive"]]
    # The split whose NDCG@10 chooses the epoch kept: the recipe's evaluator is its test split; dev does not peek
    select_on: Literal["dev", "test"]
    epochs: PositiveInt
    gradient_accumulation_steps: PositiveInt
    learning_rate: PositiveFloat
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"]
    optimizer: Literal["adamw_torch", "adamw_torch_fused"]
    tf32: bool
    no_duplicates: bool
    best_checkpoint_dim: PositiveInt


class EvaluateParams(Section):
    batch_size: PositiveInt
    top_k: PositiveInt = Field(ge=100)
    dev_corpus_size: PositiveInt  # documents searched by the dev evaluation of each epoch (judged + a fixed sample)
    # The evaluation corpora, the first the one checkpoint selection, the model card and `dim_*` metrics use:
    # rows, the recipe's (every source row's chunk, so a chunk is there once per question that names it and every
    # copy is relevant); chunks, each chunk once. A BEIR collection has one row per document: chunks only.
    corpus: list[Literal["rows", "chunks"]] = Field(min_length=1)

    @field_validator("corpus")
    @classmethod
    def _corpus_distinct(cls, corpus: list[str]) -> list[str]:
        if len(set(corpus)) != len(corpus):
            raise ValueError(f"expected each corpus once (got {corpus})")
        return corpus


class MatryoshkaParams(FamilyParams):
    data: DataParams
    model: ModelParams
    mine: MineParams
    train: TrainParams
    evaluate: EvaluateParams

    @model_validator(mode="after")
    def _best_dim_is_trained(self) -> MatryoshkaParams:
        if self.train.best_checkpoint_dim not in self.model.dims:
            raise ValueError(f"train.best_checkpoint_dim: expected one of model.dims {self.model.dims} "
                             f"(got {self.train.best_checkpoint_dim})")
        if len(set(self.train.loss_columns)) != 2:
            raise ValueError(f"train.loss_columns: expected anchor and positive, each once (got "
                             f"{list(self.train.loss_columns)})")
        return self
