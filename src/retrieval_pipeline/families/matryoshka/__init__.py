"""Recipe 4: a Matryoshka bi-encoder, MultipleNegativesRankingLoss inside MatryoshkaLoss.

Evaluated at every truncated dimension, so the quality each dimension keeps can be read next to the storage it
saves. Modules: prepare (pairs or a BEIR folder into a collection), mine (hard negatives), model (loading the base
model), scoring (a model at every dim; the baseline stage), train, evaluate.
"""

from __future__ import annotations

from retrieval_pipeline.core.family import Family, Requirement, TrainingRun
from retrieval_pipeline.families.matryoshka.params import MatryoshkaParams

PRIMARY_METRIC = "ndcg@10"  # what the dev evaluation selects the checkpoint by, and what the plot shows

BASE, FINETUNED = "base", "finetuned"  # the model labels: the base model and the fine-tuned one


class Matryoshka(Family):
    name = "matryoshka"
    recipe = "Matryoshka bi-encoder for domain RAG (recipe 4 in docs/recipes.md)"
    Params = MatryoshkaParams
    labels = (BASE, FINETUNED)
    stages = {"prepare": "prepare", "mine": "mine", "baseline": "scoring", "train": "train", "evaluate": "evaluate"}
    params: MatryoshkaParams

    def requirements(self) -> list[Requirement]:
        return [*self.hub_dataset(self.params.data, "data"),
                Requirement("model", self.key("model.base"), "mine, train, evaluate", model=self.params.model.base)]

    def training_runs(self) -> list[TrainingRun]:
        train = self.params.train
        texts = 2 + (self.params.mine.num_negatives if train.use_hard_negatives else 0)
        return [TrainingRun("train", self.params.model.base, self.key("model.base"), train.batch_size * texts,
                            self.params.model.max_seq_length, train.bf16)]


FAMILY = Matryoshka
