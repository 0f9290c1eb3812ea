"""Recipe 2: ColBERT late interaction (pylate), distilled from a teacher's scores, pooling-aware.

Inside every training forward pass each document's token embeddings are pooled with k-means into
ceil(tokens / pool_factor) cluster means, the pool factor drawn once per batch from a seeded generator, so the
model learns to keep its quality when the stored vectors are compressed. Evaluation measures that claim: base,
fine-tuned without pooling and pooling-aware fine-tuned, at every pool factor, with k-means and with pylate's own
hierarchical pooling.

Modules: prepare (the collection, and NanoBEIR collections), base (a ColBERT made from model.base first, where
the profile starts from a sentence embedder), teachers and mine (teacher-scored candidate lists), model (the
ColBERT fine-tuning starts from), pooling (token pooling), losses (pylate's distillation with pooled documents),
collator (training batches without the documents' dead padding), search (exact MaxSim and PLAID), scoring (a
model at every pool factor; the baseline stage), train, evaluate.
"""

from __future__ import annotations

from retrieval_pipeline.core.family import Family, Requirement, TrainingRun
from retrieval_pipeline.core.sources import HubSource, split_revision
from retrieval_pipeline.families.colbert.params import ColbertParams

BASE, WITHOUT_POOLING, POOLING_AWARE = "base", "without_pooling", "pooling_aware"
NANOBEIR = "nanobeir"  # the prepared folder's subfolder of NanoBEIR collections, one per name


class Colbert(Family):
    name = "colbert"
    recipe = "late interaction with pooling-aware distillation (recipe 2 in docs/recipes.md)"
    Params = ColbertParams
    labels = (BASE, WITHOUT_POOLING, POOLING_AWARE)
    stages = {"prepare": "prepare", "base": "base", "mine": "mine", "baseline": "scoring", "train": "train",
              "evaluate": "evaluate"}
    params: ColbertParams

    def requirements(self) -> list[Requirement]:
        data, mine, model = self.params.data, self.params.mine, self.params.model
        needs = self.hub_dataset(data, "data")
        needs += [Requirement("dataset", self.key("data.nanobeir"), "prepare",
                              dataset=HubSource(path=repo, name=config, split="train", revision=revision))
                  for repo, revision in map(split_revision, data.nanobeir) for config in ("corpus", "queries", "qrels")]
        if mine.source == "hub":
            needs.append(Requirement("dataset", self.key("mine.hub"), "mine", dataset=mine.hub))
        else:
            needs += [Requirement("model", self.key("mine.miner_model"), "mine", model=mine.miner_model),
                      Requirement("model", self.key("mine.teacher.model"), "mine", model=mine.teacher.model)]
        # with model.pretrain, only the base stage loads model.base; the later stages load the ColBERT it made
        loaded_by = "base" if model.pretrain is not None else "baseline, train"
        needs.append(Requirement("model", self.key("model.base"), loaded_by, model=model.base))
        return needs

    def training_runs(self) -> list[TrainingRun]:
        mine, train = self.params.mine, self.params.train
        runs = [TrainingRun("train (each variant)", self.params.model.base, self.key("model.base"),
                            train.batch_size * (1 + mine.n_ways), self.params.model.document_length, train.bf16)]
        pretrain = self.params.model.pretrain
        if pretrain is not None:
            runs.append(TrainingRun("base", self.params.model.base, self.key("model.base"),
                                    pretrain.batch_size * 3, self.params.model.document_length, True))
        tune = mine.teacher.fine_tune
        if mine.source == "mine" and tune is not None:
            runs.append(TrainingRun("mine (teacher, each fold)", mine.teacher.model, self.key("mine.teacher.model"),
                                    tune.batch_size * (2 + tune.negatives), mine.teacher.max_length, True))
        return runs


FAMILY = Colbert
