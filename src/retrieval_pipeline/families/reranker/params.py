"""The reranker's params: the recipe's keys, validated before any stage runs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt, field_validator, model_validator

from retrieval_pipeline.core.params import FamilyParams, Section, TrainingSection
from retrieval_pipeline.core.sources import Reference, SourceParams, SyntheticSource


class MultihopColumns(Section):
    query_id: str
    query: str
    answer: str
    supporting_titles: str
    context_titles: str
    context: str


class FactualColumns(Section):
    query_id: str
    query: str
    answer: str
    context_titles: str
    context: str


class SyntheticQuestions(SyntheticSource):
    questions_per_facility: PositiveInt = 2
    distractors: PositiveInt = 2  # other facilities' documents in a factual question's context


class MultihopSource(SourceParams):
    columns: MultihopColumns
    synthetic: SyntheticQuestions = SyntheticQuestions()


class FactualSource(SourceParams):
    columns: FactualColumns
    synthetic: SyntheticQuestions = SyntheticQuestions()


class DataParams(Section):
    multihop: MultihopSource
    factual: FactualSource
    test_size: float = Field(gt=0, lt=1)  # of the queries, per dataset
    dev_size: float = Field(ge=0, lt=1)  # of the remaining queries, held out to choose the F1 threshold


class ModelParams(Section):
    base: Reference
    max_length: PositiveInt


class FeatureParams(Section):
    entities: Literal["ner", "rules"]  # ner: a token-classification model; rules: no download
    ner_model: Reference
    max_hop: PositiveInt
    max_entities: PositiveInt
    reasoning_entity_density: float = Field(gt=0, le=1)


class MineParams(Section):
    first_stage_model: Reference
    candidates: PositiveInt  # first-stage top-k per query: the list the reranker reorders
    hard_negatives: int = Field(ge=0)  # per positive, from the top of the first-stage ranking
    easy_negatives: int = Field(ge=0)  # per positive, random
    batch_size: PositiveInt
    features: FeatureParams

    @model_validator(mode="after")
    def _some_negatives(self) -> MineParams:
        if self.hard_negatives + self.easy_negatives == 0:
            raise ValueError("hard_negatives and easy_negatives are both 0; expected at least one negative per "
                             "positive, or the reranker trains on positives only")
        return self


class StageParams(Section):
    learning_rate: PositiveFloat
    epochs: PositiveInt


class ReplayParams(StageParams):
    """Stage 2 again from the same stage-1 checkpoint, with `replay` of the stage-1 training pairs (a fraction,
    sampled with the seed) mixed into the factual pairs: a variant beside the published curriculum, trained for
    the feature settings in `variants`."""

    replay: float = Field(gt=0, le=1)
    variants: list[Literal["features", "plain"]] = Field(min_length=1)


class TrainParams(TrainingSection):
    use_features: bool
    feature_ablation: bool  # also train the other setting of use_features, for the ablation
    pos_weight: PositiveFloat
    stage1: StageParams
    stage2: StageParams
    stage2_replay: ReplayParams | None = None  # not in the recipe; null trains the published curriculum only
    weight_decay: float = Field(ge=0)


class EvaluateParams(Section):
    batch_size: PositiveInt
    # sigmoid score at or above which a sentence is called relevant (F1); "dev": the one that maximises each
    # checkpoint's F1 over the dev queries' candidates
    threshold: Literal["dev"] | float = Field(default="dev")

    @field_validator("threshold")
    @classmethod
    def _threshold_is_a_probability(cls, threshold):
        if threshold != "dev" and not 0 < threshold < 1:
            raise ValueError(f"expected 'dev' or a number between 0 and 1 (got {threshold})")
        return threshold


class RerankerParams(FamilyParams):
    data: DataParams
    model: ModelParams
    mine: MineParams
    train: TrainParams
    evaluate: EvaluateParams
