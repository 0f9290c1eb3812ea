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
    # supporting_documents: every sentence of a supporting document (the recipe's code); supporting_facts: those
    # that state the answer or name the other supporting document (longrag.label_multihop)
    positives: Literal["supporting_documents", "supporting_facts"]


class FactualSource(SourceParams):
    columns: FactualColumns
    synthetic: SyntheticQuestions = SyntheticQuestions()
    # first_answer: a sentence holding the first gold answer, lower-cased, anywhere (the recipe's code); any_answer:
    # holding any gold answer as whole words
    positives: Literal["first_answer", "any_answer"]


class DataParams(Section):
    multihop: MultihopSource
    factual: FactualSource
    test_size: float = Field(gt=0, lt=1)  # of the queries, per dataset
    dev_size: float = Field(ge=0, lt=1)  # of the remaining queries, held out to choose the F1 threshold
    min_sentence_length: int = Field(ge=0)  # a context sentence is kept when longer than this many characters


class ModelParams(Section):
    base: Reference
    max_length: PositiveInt


class FeatureParams(Section):
    entities: Literal["ner", "rules"]  # ner: a token-classification model; rules: no download
    ner_model: Reference
    # constant: [HOP:0] for every sentence (the recipe's code never sets the hop); entity_distance: the sentence's
    # distance from the query's entities over shared entities, up to max_hop
    hop: Literal["constant", "entity_distance"]
    max_hop: PositiveInt  # entity_distance only
    # recipe: the recipe's code's keyword lists for the role and [CAUSAL], [REASONING] for more than one entity or a
    # causal sentence; project: this project's regex rules, [REASONING] at an entity density (features.py)
    rules: Literal["recipe", "project"]
    max_entities: PositiveInt
    reasoning_entity_density: float = Field(gt=0, le=1)  # project rules only


class Easy(Section):
    """Where a dataset's easy negatives come from, under the recipe's rule: the least similar sentences (its
    stage-1 code) or sentences spread evenly over the rest of the similarity ranking (its stage-2 code)."""

    multihop: Literal["least_similar", "spread"]
    factual: Literal["least_similar", "spread"]


class NegativeParams(Section):
    """A training query's negatives. match_positives (the recipe's code): as many negatives as positives,
    int(hard_share x positives) of them the most similar to the query, the others easy. per_positive: for every
    positive `hard_per_positive` of the first stage's top-ranked non-evidence sentences and `easy_per_positive`
    random ones."""

    rule: Literal["match_positives", "per_positive"]
    hard_share: float = Field(ge=0, le=1)
    easy: Easy
    hard_per_positive: int = Field(ge=0)
    easy_per_positive: int = Field(ge=0)
    query_prefix: str  # before the query when scoring its similarity to a sentence (the recipe's "query: ")

    @model_validator(mode="after")
    def _some_negatives(self) -> NegativeParams:
        if self.rule == "per_positive" and self.hard_per_positive + self.easy_per_positive == 0:
            raise ValueError("hard_per_positive and easy_per_positive are both 0; expected at least one negative "
                             "per positive, or the reranker trains on positives only")
        return self


class MineParams(Section):
    first_stage_model: Reference
    candidates: PositiveInt  # first-stage top-k per query: the list the reranker reorders
    negatives: NegativeParams
    batch_size: PositiveInt
    features: FeatureParams


class StageParams(Section):
    learning_rate: PositiveFloat
    epochs: PositiveInt
    warmup_ratio: float | None = Field(default=None, ge=0, lt=1)  # None: train.warmup_ratio
    # with train.evaluation: stop after this many evaluations without a better F1 (None: train every epoch)
    early_stopping_patience: PositiveInt | None = None


class ReplayParams(StageParams):
    """Stage 2 again from the same stage-1 checkpoint, with `replay` of the stage-1 training pairs (a fraction,
    sampled with the seed) mixed into the factual pairs: a variant beside the published curriculum, trained for
    the feature settings in `variants`."""

    replay: float = Field(gt=0, le=1)
    variants: list[Literal["features", "plain"]] = Field(min_length=1)


class EvaluationParams(Section):
    """Evaluation during training, which keeps each stage's best checkpoint by F1 at `threshold`: on the recipe's
    `examples` (a seeded `share` of the training pairs, held out pair by pair, as its code splits them; the F1 it
    publishes is theirs) or on the dev queries' pairs (`dev_queries`: no pair of a reported query is seen), every
    `steps` optimizer steps (None: every epoch)."""

    split: Literal["examples", "dev_queries"]
    share: float = Field(gt=0, lt=1)  # examples only
    steps: PositiveInt | None
    threshold: float = Field(gt=0, lt=1)


class TrainParams(TrainingSection):
    use_features: bool
    feature_ablation: bool  # also train the other setting of use_features, for the ablation
    pos_weight: PositiveFloat
    stage1: StageParams
    stage2: StageParams
    stage2_replay: ReplayParams | None = None  # not in the recipe; null trains the published curriculum only
    weight_decay: float = Field(ge=0)
    gradient_accumulation_steps: PositiveInt
    fp16: bool  # used only on a GPU (bf16 wins where both are set and the GPU supports it)
    evaluation: EvaluationParams | None = None  # None: every epoch trained, the last checkpoint kept


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
