"""Recipe 3: a cross-encoder reranker with feature-token inputs and a two-stage curriculum.

Each (query, sentence) pair can be prefixed with feature tokens,
`[HOP:h] [ROLE:r] [ENT:e1,e2] [CAUSAL] [REASONING] query [SEP] sentence`, added to the
tokenizer as special tokens. Stage 1 trains on multi-hop data (HotpotQA), stage 2
continues from the stage-1 weights on factual data (NQ) at a lower learning rate.
The recipe's own results show why the pipeline measures both classification (F1,
AUC) and ranking (NDCG@10, MAP, MRR@10) and trains a plain model beside the
featured one: its model learned to read the feature tokens instead of the text.

Modules: longrag (contexts into labelled sentences), prepare, features (the feature tokens), pools (first-stage
candidates and training pairs), mine, ranking (the lists' metrics; the baseline stage), scoring (a checkpoint on
the lists), train, evaluate.
"""

from __future__ import annotations

from retrieval_pipeline.core.family import Family, Requirement, TrainingRun
from retrieval_pipeline.families.reranker.params import RerankerParams

DATASETS = ("multihop", "factual")  # stage 1 data, stage 2 data
CURRICULUM = ("stage1", "stage2")
REPLAY = "stage2_replay"  # stage 2 again with stage-1 pairs replayed: a variant beside the recipe
VARIANTS = {True: "features", False: "plain"}  # use_features -> the checkpoints' folder
FIRST_STAGE = "first_stage"  # the label of the first stage's own ranking, what reranking is measured against


class Reranker(Family):
    name = "reranker"
    recipe = "cross-encoder with feature-rich inputs and a two-stage curriculum (recipe 3 in docs/recipes.md)"
    Params = RerankerParams
    labels = (FIRST_STAGE, *(f"{variant}/{stage}" for variant in VARIANTS.values()
                             for stage in (*CURRICULUM, REPLAY)))
    stages = {"prepare": "prepare", "mine": "mine", "baseline": "ranking", "train": "train", "evaluate": "evaluate"}
    collection_source = "data.factual"  # stage 1's multi-hop data stays the recipe's own under `collection`
    params: RerankerParams

    def requirements(self) -> list[Requirement]:
        data, mine = self.params.data, self.params.mine
        needs = [requirement for dataset in DATASETS
                 for requirement in self.hub_dataset(getattr(data, dataset), f"data.{dataset}")]
        needs.append(Requirement("model", self.key("mine.first_stage_model"), "mine", model=mine.first_stage_model))
        if mine.features.entities == "ner":
            needs.append(Requirement("model", self.key("mine.features.ner_model"), "mine",
                                     model=mine.features.ner_model))
        needs.append(Requirement("model", self.key("model.base"), "train", model=self.params.model.base))
        return needs

    def training_runs(self) -> list[TrainingRun]:
        train = self.params.train
        return [TrainingRun("train (each variant, both stages)", self.params.model.base, self.key("model.base"),
                            train.batch_size, self.params.model.max_length, train.bf16 or train.fp16)]


FAMILY = Reranker
