"""ColBERT's train stage: each variant (pooling-aware, and without pooling for the ablation) distilled from the
mined teacher scores with pylate's Distillation loss through sentence-transformers' trainer, then scored at every
pool factor and saved with its model card."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from retrieval_pipeline.core.family import Scores, write_scores
from retrieval_pipeline.core.io import atomic_directory
from retrieval_pipeline.core.model_card import CardMetrics, ModelCard
from retrieval_pipeline.core.resume import ResumableTrainer, Resume
from retrieval_pipeline.core.training import shared_arguments
from retrieval_pipeline.families.colbert import POOLING_AWARE, WITHOUT_POOLING, Colbert
from retrieval_pipeline.families.colbert.losses import pooling_distillation
from retrieval_pipeline.families.colbert.model import base_colbert
from retrieval_pipeline.families.colbert.scoring import score


def variants(family: Colbert) -> dict[str, list[int]]:
    """Each trained model and the pool factors its training draws from; the ablation comes first."""
    train = family.params.train
    without_pooling = {WITHOUT_POOLING: [1]} if train.pooling_ablation else {}
    return {**without_pooling, POOLING_AWARE: train.pool_factors}


def training_examples(family: Colbert):
    """pylate's distillation examples: each query, its candidate documents (the positive first) and the teacher's
    scores."""
    from datasets import Dataset

    train = pl.read_parquet(family.paths.mined / "train.parquet")
    queries = dict(pl.read_parquet(family.paths.mined / "queries.parquet").iter_rows())
    documents = dict(pl.read_parquet(family.paths.mined / "documents.parquet").iter_rows())
    return Dataset.from_dict({"query": [queries[q] for q in train["query_id"]],
                              "documents": [[documents[d] for d in ids] for ids in train["document_ids"]],
                              "scores": train["scores"].to_list()})


def build_trainer(family: Colbert, model, pool_factors: list[int], examples, output_dir: Path):
    from sentence_transformers import SentenceTransformerTrainingArguments

    from retrieval_pipeline.families.colbert.collator import TrimmedColBERTCollator

    train = family.params.train
    loss = pooling_distillation(model, pool_factors, family.params.seed, train.pool_method,
                                family.params.model.pooling, train.normalize_scores)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output_dir), num_train_epochs=train.epochs, per_device_train_batch_size=train.batch_size,
        learning_rate=train.learning_rate, logging_steps=train.logging_steps,
        save_strategy="epoch", save_total_limit=1,  # to resume from
        **shared_arguments(family.params.seed, train.bf16, train.warmup_ratio))
    trainer = ResumableTrainer(model=model, args=args, train_dataset=examples, loss=loss,
                               data_collator=TrimmedColBERTCollator(tokenize_fn=model.tokenize))
    # the pool factors drawn so far are part of the training's state, like the global generators
    trainer.random_generators = {"pool_factors": loss.score_metric.sampler.generator}
    return trainer


def train(family: Colbert) -> None:
    resume = Resume(family, "train")
    examples = training_examples(family)
    scores: dict[str, Scores] = {}
    with atomic_directory(family.paths.model) as out:
        for variant, pool_factors in variants(family).items():
            log, label = family.paths.training_log / variant, f"train {variant}"
            kept = resume.finished(variant, out / variant, log, label)
            if kept is not None:
                scores.update(kept)
                continue
            model = base_colbert(family)
            trainer = build_trainer(family, model, pool_factors, examples, resume.output_dir(variant))
            print(f"train: {variant}: pool factors {pool_factors}, {len(examples)} queries")
            resume.train(trainer, variant, log, label)
            model.save_pretrained(str(out / variant), create_model_card=False)
            scores[variant] = score(family, model, variant)
            card(family, variant, pool_factors, scores[variant], len(examples)).write(out / variant)
            resume.keep(variant, out / variant, log, {variant: scores[variant]})
    write_scores(family.paths.trained_scores, scores)
    resume.close()


def card(family: Colbert, variant: str, pool_factors: list[int], scores: Scores, training_queries: int) -> ModelCard:
    model, mine, data = family.params.model, family.params.mine, family.params.data
    pooling = (f"Trained pooling-aware: in every training step the documents' token embeddings were k-means "
               f"pooled at a pool factor drawn uniformly from {pool_factors}, so that it keeps its quality when "
               "stored documents are pooled." if pool_factors != [1] else
               "Trained without pooling (pool factor 1): the ablation that separates the gain of pooling-aware "
               "training from the gain of fine-tuning.")
    start = ("" if model.pretrain is None else
             f" It starts from a ColBERT the base stage made of `{model.base}`, trained without pooling on a "
             "synthetic world of its own, leaving out every claim that names an entity this collection names.")
    return ModelCard.of(
        family,
        title=f"ColBERT ({variant})",
        summary=(f"A ColBERT late-interaction retriever ({model.embedding_size}-dim token embeddings), distilled "
                 f"with pylate's KL loss from the teacher `{mine.teacher.model}` ({mine.teacher.kind}) on each "
                 f"query's {mine.n_ways} mined candidates.{start} {pooling}"),
        base_model=model.base,
        training_data=(f"{data.describe()}: {training_queries} training queries (split `{data.training_split()}`), "
                       f"candidates from `{mine.miner_model}`, likely false negatives dropped"),
        hub_datasets=data.hub_datasets(),
        metrics=CardMetrics(dataset=data.describe(), queries=scores.metrics["queries"], task="retrieval",
                            rows={f"{method} pooling, pool factor {key[3:]}": values
                                  for method, by_factor in scores.metrics["test"].items()
                                  for key, values in by_factor.items()},
                            columns=["ndcg@10", "mrr@10", "recall@100", "vectors_per_document"]),
        usage=f"""from pylate import models
model = models.ColBERT("models/{family.name}/{variant}")
# pool_factor: pylate's hierarchical pooling of the stored document vectors
documents = model.encode(["The wind farm opened in 2019 with forty turbines."], is_query=False, pool_factor=2)
queries = model.encode(["When did the wind farm open?"], is_query=True)""",
        library_name="PyLate", pipeline_tag="sentence-similarity",
        tags=["ColBERT", "late-interaction", "knowledge-distillation", "token-pooling", variant])
