"""DPR's train stage: the two towers trained together with InfoNCE at the recipe's temperature through
sentence-transformers' trainer (queries routed to the query tower, passages to the passage tower), then scored and
saved each with its model card."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import torch
from torch import nn
from transformers import TrainerCallback

from retrieval_pipeline.core.collection import load_collection
from retrieval_pipeline.core.family import Scores, write_scores
from retrieval_pipeline.core.io import atomic_directory
from retrieval_pipeline.core.model_card import CardMetrics, ModelCard
from retrieval_pipeline.core.resume import ResumableTrainer, Resume
from retrieval_pipeline.core.training import shared_arguments
from retrieval_pipeline.families.dpr import FINETUNED, TOWERS, Dpr
from retrieval_pipeline.families.dpr.scoring import RETRIEVAL_METRICS, score, similarity_diagnostics
from retrieval_pipeline.families.dpr.towers import family_towers, tower_of


class InfoNCELoss(nn.Module):
    """InfoNCE over in-batch (and optional hard) negatives; keeps the last batch's logit diagnostics."""

    def __init__(self, model, temperature: float) -> None:
        super().__init__()
        self.model, self.temperature = model, temperature
        self.cross_entropy = nn.CrossEntropyLoss()
        self.diagnostics: dict[str, float] = {}

    def forward(self, features, labels=None) -> torch.Tensor:
        queries, *passages = (self.model(feature)["sentence_embedding"] for feature in features)
        candidates = torch.cat(passages)
        logits = queries @ candidates.T / self.temperature
        cosines = similarity_diagnostics(queries.detach(), passages[0].detach())
        self.diagnostics = {"diagonal_logit": cosines["diagonal_cosine"] / self.temperature,
                            "mean_logit": cosines["mean_cosine"] / self.temperature}
        return self.cross_entropy(logits, torch.arange(len(queries), device=logits.device))


class DiagnosticsCallback(TrainerCallback):
    """Adds the loss's logit diagnostics to every training log, before DVCLive records it."""

    def __init__(self, loss: InfoNCELoss) -> None:
        self.loss = loss

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and "loss" in logs:
            logs.update(self.loss.diagnostics)


def training_rows(family: Dpr):
    """(query, positive) pairs, or with use_hard_negatives (query, positive, negative) from the mined source."""
    from datasets import Dataset

    train = family.params.train
    if train.use_hard_negatives:
        column = f"{train.hard_negative_source}_negative"
        mined = pl.read_parquet(family.paths.mined / "hard_negatives.parquet").drop_nulls(column)
        return Dataset.from_polars(mined.select("query", "positive", pl.col(column).alias("negative")))
    pairs = load_collection(family.paths.prepared).pairs("train")
    return Dataset.from_polars(pairs.select("query", positive="document"))


def build_trainer(family: Dpr, model, output_dir: Path):
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.training_args import BatchSamplers

    train = family.params.train
    loss = InfoNCELoss(model, train.temperature)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output_dir), num_train_epochs=train.epochs, per_device_train_batch_size=train.batch_size,
        learning_rate=train.learning_rate, weight_decay=train.weight_decay,
        batch_sampler=BatchSamplers.NO_DUPLICATES, logging_steps=train.logging_steps,
        save_strategy="epoch", save_total_limit=1,  # to resume from
        router_mapping={"query": "query", "positive": "document", "negative": "document"},
        **shared_arguments(family.params.seed, train.bf16, train.warmup_ratio))
    trainer = ResumableTrainer(model=model, args=args, train_dataset=training_rows(family), loss=loss)
    trainer.add_callback(DiagnosticsCallback(loss))
    return trainer


def train(family: Dpr) -> None:
    resume = Resume(family, "train")
    model = family_towers(family)
    trainer = build_trainer(family, model, resume.output_dir(FINETUNED))
    resume.train(trainer, FINETUNED, family.paths.training_log, "train")
    if trainer.is_world_process_zero():
        towers = {route: tower_of(model, route) for route in TOWERS}
        scores = score(family, towers["query"], towers["document"], FINETUNED)
        with atomic_directory(family.paths.model) as out:
            for route, folder in TOWERS.items():
                towers[route].save_pretrained(str(out / folder), create_model_card=False)
                card(family, route, scores, len(trainer.train_dataset)).write(out / folder)
        write_scores(family.paths.trained_scores, {FINETUNED: scores})
        resume.close()


def card(family: Dpr, route: str, scores: Scores, training_rows: int) -> ModelCard:
    train, data = family.params.train, family.params.data
    side, other = ("query", TOWERS["document"]) if route == "query" else ("passage", TOWERS["query"])
    encodes = "claims and questions" if route == "query" else "evidence passages"
    negatives = (f"in-batch and {train.hard_negative_source} hard negatives" if train.use_hard_negatives
                 else "in-batch negatives")
    return ModelCard.of(
        family,
        title=f"DPR {side} encoder",
        summary=(f"The {side} tower of a dual-encoder dense passage retriever: it encodes {encodes}; "
                 f"`models/{family.name}/{other}` is the other tower, with independent weights. Mean pooling, L2 "
                 f"normalisation, trained with InfoNCE over {negatives} at temperature {train.temperature}. "
                 "The scores below are the two towers together."),
        base_model=family.params.model.base,
        training_data=f"{data.describe()}: {training_rows} claim/evidence pairs (labels {data.keep_labels})",
        hub_datasets=data.hub_datasets(),
        metrics=CardMetrics(dataset=data.describe(), queries=scores.tables["per_query"].height, task="retrieval",
                            rows={"query + passage towers": scores.metrics},
                            columns=list(RETRIEVAL_METRICS)),
        usage=f"""from sentence_transformers import SentenceTransformer
query_encoder = SentenceTransformer("models/{family.name}/{TOWERS['query']}")
passage_encoder = SentenceTransformer("models/{family.name}/{TOWERS['document']}")
scores = query_encoder.encode(["a claim"]) @ passage_encoder.encode(["a passage"]).T""",
        library_name="sentence-transformers", pipeline_tag="sentence-similarity",
        tags=["dpr", "dual-encoder", f"{side}-encoder"])
