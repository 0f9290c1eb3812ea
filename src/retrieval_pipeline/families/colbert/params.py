"""ColBERT's params: the recipe's keys, validated before any stage runs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from retrieval_pipeline.core.params import FamilyParams, Section, Seed, TrainingSection
from retrieval_pipeline.core.sources import HubSource, Reference, SourceParams


class SyntheticClaims(Section):
    facilities: PositiveInt = 48
    companies: PositiveInt = 8
    chunks_per_abstract: PositiveInt = 1  # register chunks per document
    claims_per_abstract: PositiveInt = 1
    test_size: float = Field(default=0.2, gt=0, lt=1)


class DataParams(SourceParams):
    """Every family's data-source vocabulary (core/sources.py), a BEIR collection's only: `hf_beir` on the hub,
    `local` a folder, or the synthetic world's claims; the qrels splits it trains and tests on are its `splits`."""

    source: Literal["synthetic", "hf_beir", "local"]
    synthetic: SyntheticClaims = SyntheticClaims()
    nanobeir: list[Reference] = []  # NanoBEIR collections (hub ids) evaluated beside the test split

    def describe(self) -> str:
        if self.source == "local":
            return f"BEIR folder {self.local.path}"
        return super().describe() if self.source == "hf_beir" else "synthetic world (claims)"

    def training_split(self) -> str:
        """The source's name for the qrels split the training queries come from."""
        return "train" if self.source == "synthetic" else getattr(self, self.source).splits.train

    def is_collection(self) -> bool:
        """A BEIR collection (a folder or a hub dataset) rather than the synthetic world's claims."""
        return self.source != "synthetic"


PoolMethod = Literal["kmeans", "kmeans_lloyd", "hierarchical"]


class PoolingParams(Section):
    """How document tokens are pooled, the same in training and evaluation. `kmeans` is the recipe author's
    (stefan-jo/pylate, ColBERT.pool_embeddings_kmeans): max(n // pool factor, 1) clusters of the n tokens after the
    protected ones, max(min(12 + ceil(6 log2 r), 50), 20) iterations for r = n / clusters, from a seeded library
    k-means; `kmeans_lloyd` is this project's: ceil(all tokens / pool factor) vectors from `kmeans_iterations` of
    Lloyd's k-means started at evenly spaced tokens."""

    kmeans_backend: Literal["fastkmeans", "sklearn"]  # kmeans: the library that clusters
    kmeans_iterations: PositiveInt  # kmeans_lloyd only
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


class SelectionParams(Section):
    """What a mined list keeps, as the recipe's score_beir_training_data.py selects it: the best-scored positives,
    the best-scored hard negatives, `medium` others drawn from the rest of the hard ones and `random` drawn from the
    random ones; a shortfall is filled from the medium pool, then the random pool."""

    positives: PositiveInt
    hard: int = Field(ge=0)
    medium: int = Field(ge=0)
    random: int = Field(ge=0)


class MineParams(Section):
    source: Literal["mine", "hub"]  # mine: dense candidates scored by the teacher; hub: a published mined set
    hub: HubSource | None = None  # the published set (query_id, document_ids, scores, labels), ids of the collection
    miner_model: Reference
    candidates: PositiveInt  # hard candidates: the miner's top documents per training query, positives left out
    random_candidates: int = Field(ge=0)  # random candidates per training query, drawn from the other documents
    negative_threshold_share: float = Field(gt=0, le=1)  # drop a negative scoring above this x the median positive
    selection: SelectionParams
    n_ways: int = Field(ge=2)  # documents per training example: each list cut to its n_ways best-scored
    batch_size: PositiveInt
    teacher: TeacherParams

    @model_validator(mode="after")
    def _hub_source_is_configured(self) -> MineParams:
        if self.source == "hub" and self.hub is None:
            raise ValueError("source is 'hub' but the 'hub' section (path, split) naming the mined set is missing")
        return self


class TrainParams(TrainingSection):
    pool_factors: list[PositiveInt] = Field(min_length=1)  # drawn uniformly, once per batch
    pool_method: Literal["kmeans", "kmeans_lloyd"]  # how training pools the documents (model.pooling)
    pooling_ablation: bool  # also train with pool factor 1 only, to separate pooling-aware training from fine-tuning
    normalize_scores: bool  # pylate's Distillation: min-max normalise the student's scores per query
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
    methods: list[PoolMethod] = Field(min_length=1)  # the first is the plot's and the serving cost's
    batch_size: PositiveInt
    top_k: PositiveInt = Field(ge=100)
    # the NanoBEIR collections' documents are cut to each of these lengths in turn (the recipe's evaluation script
    # cuts them to 180 tokens; model.document_length is what the model trains on)
    nanobeir_document_lengths: list[PositiveInt] = Field(min_length=1)
    index: IndexParams


class ColbertParams(FamilyParams):
    data: DataParams
    model: ModelParams
    mine: MineParams
    train: TrainParams
    evaluate: EvaluateParams
