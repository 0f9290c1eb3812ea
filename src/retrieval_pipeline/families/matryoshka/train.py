"""Matryoshka's train stage: MultipleNegativesRankingLoss inside MatryoshkaLoss with sentence-transformers' trainer,
the checkpoint chosen by NDCG@10 at one dim on the selection split (dev, or the recipe's test), scored on the test
split and saved with its model card."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import torch
from sentence_transformers.evaluation import SentenceEvaluator

from retrieval_pipeline.core.collection import load_collection
from retrieval_pipeline.core.family import Scores, write_scores
from retrieval_pipeline.core.io import atomic_directory
from retrieval_pipeline.core.model_card import CardMetrics, ModelCard
from retrieval_pipeline.core.resume import ResumableTrainer, Resume
from retrieval_pipeline.core.retrieval import bounded_corpus
from retrieval_pipeline.core.training import shared_arguments
from retrieval_pipeline.families.matryoshka import FINETUNED, PRIMARY_METRIC, Matryoshka
from retrieval_pipeline.families.matryoshka.model import load_model
from retrieval_pipeline.families.matryoshka.scoring import corpora, evaluate_corpus, rank_at_dims, score


class DimensionEvaluator(SentenceEvaluator):
    """Retrieval on the selection split at every Matryoshka dim during training (one encode per evaluation), over
    the first evaluation corpus."""

    def __init__(self, queries: pl.DataFrame, corpus: pl.DataFrame, qrels: dict[str, dict[str, int]],
                 dims: list[int], primary_dim: int, batch_size: int, view: str, name: str = "dev") -> None:
        super().__init__()
        self.queries, self.corpus, self.qrels, self.view = queries, corpus, qrels, view
        self.dims, self.batch_size, self.name = dims, batch_size, name
        self.primary_metric = f"{name}_dim_{primary_dim}_{PRIMARY_METRIC}"

    def __call__(self, model, output_path=None, epoch=-1, steps=-1) -> dict[str, float]:
        metrics = {}
        for dim, (run, _) in rank_at_dims(model, self.queries, self.corpus, self.dims, self.batch_size, 100).items():
            means, _ = evaluate_corpus(run, self.qrels, self.corpus, self.view, 100)
            metrics.update({f"dim_{dim}_{name}": value for name, value in means.items()})
        metrics = self.prefix_name_to_metrics(metrics, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics


def training_pairs(family: Matryoshka):
    """(anchor, positive) pairs in `train.loss_columns` order, or with use_hard_negatives the mined (anchor,
    positive, negative_1...) rows, the question anchoring its chunk and the mined chunks."""
    from datasets import Dataset

    if family.params.train.use_hard_negatives:
        mined = pl.read_parquet(family.paths.mined / "hard_negatives.parquet").drop("scores")
        return Dataset.from_polars(mined)
    pairs = load_collection(family.paths.prepared).pairs("train").select(anchor="query", positive="document")
    return Dataset.from_polars(pairs.select(family.params.train.loss_columns))


def build_trainer(family: Matryoshka, model, checkpoints: Path):
    """The recipe's trainer: MNRL inside MatryoshkaLoss, the epoch kept chosen on `train.select_on` at
    best_checkpoint_dim, a checkpoint each epoch (the best and the last kept) to select from and to resume from."""
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.losses import MatryoshkaLoss, MultipleNegativesRankingLoss
    from sentence_transformers.training_args import BatchSamplers

    params = family.params
    train, dims = params.train, params.model.dims
    loss = MatryoshkaLoss(model, MultipleNegativesRankingLoss(model), matryoshka_dims=dims)
    collection = load_collection(family.paths.prepared)
    selection_queries, selection_qrels = collection.split(train.select_on)
    corpus = bounded_corpus(collection.corpus, [document for judged in selection_qrels.values() for document in judged],
                            params.evaluate.dev_corpus_size, params.seed)
    evaluator = None
    if selection_queries.height:
        evaluator = DimensionEvaluator(selection_queries, corpus, selection_qrels, dims, train.best_checkpoint_dim,
                                       params.evaluate.batch_size, corpora(family, collection.corpus)[0],
                                       name=train.select_on)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=train.epochs,
        per_device_train_batch_size=train.batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        per_device_eval_batch_size=params.evaluate.batch_size,
        learning_rate=train.learning_rate,
        lr_scheduler_type=train.lr_scheduler,
        optim=train.optimizer,
        tf32=train.tf32 and torch.cuda.is_available(),
        batch_sampler=BatchSamplers.NO_DUPLICATES if train.no_duplicates else BatchSamplers.BATCH_SAMPLER,
        eval_strategy="epoch" if evaluator else "no",
        save_strategy="epoch",
        save_total_limit=2,
        load_best_model_at_end=evaluator is not None,
        metric_for_best_model=f"eval_{evaluator.primary_metric}" if evaluator else None,
        greater_is_better=True,
        logging_steps=train.logging_steps,
        **shared_arguments(params.seed, train.bf16, train.warmup_ratio),
    )
    return ResumableTrainer(model=model, args=args, train_dataset=training_pairs(family), loss=loss,
                            evaluator=evaluator)


def train(family: Matryoshka) -> None:
    resume = Resume(family, "train")
    model = load_model(family, family.params.model.base, "the base model")
    # Under torchrun every rank finds the best checkpoint at the same path.
    trainer = build_trainer(family, model, resume.output_dir(FINETUNED))
    resume.train(trainer, FINETUNED, family.paths.training_log, "train")
    if trainer.is_world_process_zero():
        scores = score(family, model, FINETUNED)
        with atomic_directory(family.paths.model) as out:
            model.save_pretrained(str(out), create_model_card=False)
            card(family, scores, trainer.train_dataset.num_rows).write(out)
        write_scores(family.paths.trained_scores, {FINETUNED: scores})
        resume.close()


def card(family: Matryoshka, scores: Scores, training_rows: int) -> ModelCard:
    data, dims = family.params.data, family.params.model.dims
    negatives = "mined hard negatives" if family.params.train.use_hard_negatives else "in-batch negatives"
    return ModelCard.of(
        family,
        title="Matryoshka bi-encoder",
        summary=(f"A bi-encoder fine-tuned with MultipleNegativesRankingLoss ({negatives}) inside MatryoshkaLoss, "
                 f"so that its embeddings truncated to any of {dims} dimensions still retrieve well. The "
                 f"checkpoint kept is the epoch with the best {family.params.train.select_on} NDCG@10 at dim "
                 f"{family.params.train.best_checkpoint_dim}. Metrics over the `{scores.metrics['corpus']}` "
                 "evaluation corpus (rows: a chunk once per source row, as the recipe evaluates; chunks: once)."),
        base_model=family.params.model.base,
        training_data=f"{data.describe()}: {training_rows} question/chunk pairs",
        hub_datasets=data.hub_datasets(),
        metrics=CardMetrics(dataset=data.describe(), queries=scores.metrics["queries"], task="retrieval",
                            rows={f"dim {key[4:]}": values
                                  for key, values in scores.metrics[scores.metrics["corpus"]].items()},
                            columns=["ndcg@10", "mrr@10", "recall@10", "bytes_per_vector"]),
        usage=f"""from sentence_transformers import SentenceTransformer
model = SentenceTransformer("models/{family.name}", truncate_dim={dims[-1]})  # or any of {dims}
embeddings = model.encode(["What is the maximum operating pressure?"])""",
        library_name="sentence-transformers", pipeline_tag="sentence-similarity",
        tags=["matryoshka", "MultipleNegativesRankingLoss", "MatryoshkaLoss"])
