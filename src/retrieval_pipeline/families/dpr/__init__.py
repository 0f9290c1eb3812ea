"""Recipe 1: a dual-encoder dense passage retriever with fully independent query and passage towers.

Each tower is the base model with mean pooling and L2 normalisation; training is InfoNCE over in-batch negatives at
temperature 0.05 (a loss of this package), routed so that queries only ever pass through the query tower. Modules:
prepare (claim/evidence pairs or a BEIR folder into a collection), towers (the two-tower model), mine (BM25 and
dense hard negatives), scoring (the baseline stage), train, evaluate.
"""

from __future__ import annotations

from retrieval_pipeline.core.family import Family, Requirement, TrainingRun
from retrieval_pipeline.families.dpr.params import DprParams

TOWERS = {"query": "query_encoder", "document": "passage_encoder"}  # route -> the tower's folder in models/dpr

BASE, FINETUNED = "base", "finetuned"  # the model labels: the base model and the fine-tuned one


class Dpr(Family):
    name = "dpr"
    recipe = "dual-encoder dense passage retriever (recipe 1 in docs/recipes.md)"
    Params = DprParams
    labels = (BASE, FINETUNED)
    stages = {"prepare": "prepare", "mine": "mine", "baseline": "scoring", "train": "train", "evaluate": "evaluate"}
    params: DprParams

    def requirements(self) -> list[Requirement]:
        return [*self.hub_dataset(self.params.data, "data"),
                Requirement("model", self.key("model.base"), "mine, train, evaluate", model=self.params.model.base)]

    def training_runs(self) -> list[TrainingRun]:
        train = self.params.train
        texts = 3 if train.use_hard_negatives else 2
        return [TrainingRun("train", self.params.model.base, self.key("model.base"), train.batch_size * texts,
                            self.params.model.max_seq_length, train.bf16, copies=len(TOWERS))]


FAMILY = Dpr
