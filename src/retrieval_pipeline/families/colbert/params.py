"""ColBERT's params: the recipe's keys, validated before any stage runs."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from retrieval_pipeline.core.params import FamilyParams, Section, Seed, TrainingSection
from retrieval_pipeline.core.sources import BeirHub, HubSource, Reference


class BeirLocal(Section):
    path: Path


class SyntheticClaims(Section):
    facilities: PositiveInt = 48
    companies: PositiveInt = 8
    chunks_per_abstract: PositiveInt = 1  # register chunks per document
    claims_per_abstract: PositiveInt = 1
    test_size: float = Field(default=0.2, gt=0, lt=1)


class DataParams(Section):
    source: Literal["synthetic", "hf", "local"]
    hf: BeirHub | None = None
    local: BeirLocal | None = None
    synthetic: SyntheticClaims = SyntheticClaims()
    train_split: str = "train"
    test_split: str = "test"
    nanobeir: list[Reference] = []  # NanoBEIR collections (hub ids) evaluated beside the test split

    @model_validator(mode="after")
    def _selected_source_is_configured(self) -> DataParams:
        if self.source in ("hf", "local") and getattr(self, self.source) is None:
            raise ValueError(f"source is '{self.source}' but the '{self.source}' section is missing")
        return self

    def describe(self) -> str:
        if self.source == "hf":
            return self.hf.describe()
        if self.source == "local":
            return f"BEIR folder {self.local.path}"
        return "synthetic world (claims)"

    def hub_datasets(self) -> list[str]:
        return self.hf.hub_datasets() if self.source == "hf" else []

    def is_collection(self) -> bool:
        """A BEIR collection (a folder or a hub dataset) rather than the synthetic world's claims."""
        return self.source != "synthetic"


class PoolingParams(Section):
    """How document tokens are k-means pooled, the same in training and evaluation."""
    kmeans_iterations: PositiveInt
    protected_tokens: int = Field(ge=0)  # leading tokens ([CLS]) kept out of pooling


class BasePretraining(Section):
    """Make a ColBERT of `model.base` before the recipe fine-tunes it (the base stage): trained without pooling,
    contrastively (each claim against its abstract, another abstract of the same entity and the batch's others), on
    a synthetic world of its own, leaving out every claim whose claim or abstract names what the collection names."""

    world_seed: Seed  # the pretraining world's own seed: other entities than the collection's synthetic world
    facilities: PositiveInt
    companies: PositiveInt
    claims_per_abstract: PositiveInt
    epochs: PositiveInt
    learning_rate: PositiveFloat
    batch_size: PositiveInt
    warmup_ratio: float = Field(ge=0, lt=1)


class ModelParams(Section):
    base: Reference
    query_length: PositiveInt
    document_length: PositiveInt
    embedding_size: PositiveInt
    pooling: PoolingParams
    pretrain: BasePretraining | None = None  # null: model.base is a ColBERT already, fine-tuned as it is


class TeacherTraining(Section):
    """Fine-tune a bi-encoder teacher in-domain before it scores (MultipleNegativesRankingLoss), cross-fitted: the
    training queries are cut into `folds`, and each fold's candidate lists are scored by a teacher trained on the
    other folds, so no query is scored by a model that has seen its own relevance label."""

    folds: int = Field(ge=2)
    negatives: int = Field(ge=0)  # per pair: the miner's top-ranked other candidates, as hard negatives
    epochs: PositiveInt
    learning_rate: PositiveFloat
    batch_size: PositiveInt
    warmup_ratio: float = Field(ge=0, lt=1)


class TeacherParams(Section):
    kind: Literal["cross_encoder", "yes_logit", "bi_encoder"]
    model: Reference
    prompt: str = ""  # yes_logit only
    scale: PositiveFloat = 20.0  # bi_encoder only: score = scale x cosine
    max_length: PositiveInt
    batch_size: PositiveInt
    fine_tune: TeacherTraining | None = None  # bi_encoder only: train it on the collection first

    @model_validator(mode="after")
    def _fine_tune_needs_a_bi_encoder(self) -> TeacherParams:
        if self.fine_tune is not None and self.kind != "bi_encoder":
            raise ValueError("fine_tune: expected kind 'bi_encoder' (rerankers are used as they are)")
        return self


class MineParams(Section):
    source: Literal["mine", "hub"]  # mine: dense candidates scored by the teacher; hub: a published mined set
    hub: HubSource | None = None  # the published set (query_id, document_ids, scores, labels), ids of the collection
    miner_model: Reference
    candidates: PositiveInt  # dense top-k per training query
    n_ways: int = Field(ge=2)  # documents per query in a training example: the positive and n_ways - 1 others
    relative_margin: float = Field(ge=0, lt=1)
    batch_size: PositiveInt
    teacher: TeacherParams

    @model_validator(mode="after")
    def _hub_source_is_configured(self) -> MineParams:
        if self.source == "hub" and self.hub is None:
            raise ValueError("source is 'hub' but the 'hub' section (path, split) naming the mined set is missing")
        return self


class TrainParams(TrainingSection):
    pool_factors: list[PositiveInt] = Field(min_length=1)  # drawn uniformly, once per batch
    pooling_ablation: bool  # also train with pool factor 1 only, to separate pooling-aware training from fine-tuning
    epochs: PositiveInt
    learning_rate: PositiveFloat


class IndexParams(Section):
    """Above `above_documents` documents, search a PLAID index rather than scoring every document exactly."""

    above_documents: PositiveInt
    nbits: PositiveInt  # bits per residual dimension
    kmeans_iterations: PositiveInt
    centroid_sample: PositiveInt  # documents whose token vectors train the centroids and set how many there are
    n_ivf_probe: PositiveInt  # nearest centroids probed per query token
    n_full_scores: PositiveInt  # candidates scored with their decompressed vectors


class EvaluateParams(Section):
    pool_factors: list[PositiveInt] = Field(min_length=1)
    methods: list[Literal["kmeans", "hierarchical"]] = Field(min_length=1)
    batch_size: PositiveInt
    top_k: PositiveInt = Field(ge=100)
    index: IndexParams


class ColbertParams(FamilyParams):
    data: DataParams
    model: ModelParams
    mine: MineParams
    train: TrainParams
    evaluate: EvaluateParams
