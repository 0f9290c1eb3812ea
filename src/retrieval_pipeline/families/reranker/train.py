"""The reranker's train stage: per variant (feature tokens or plain), stage 1 on multi-hop pairs from a fresh
one-logit head, then stage 2 (and its replay variant) from the stage-1 weights on factual pairs, each with binary
cross-entropy in sentence-transformers' CrossEncoderTrainer; with `train.evaluation`, each stage evaluated as it
trains and its best checkpoint by F1 kept (stopping early after `early_stopping_patience` evaluations without a
better one), on pairs held out from training; every checkpoint scored and saved with its card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import torch
from sentence_transformers.evaluation import SentenceEvaluator
from transformers import set_seed

from retrieval_pipeline.core.cross_encoders import load_cross_encoder
from retrieval_pipeline.core.errors import DataError
from retrieval_pipeline.core.family import Scores, write_scores
from retrieval_pipeline.core.io import atomic_directory
from retrieval_pipeline.core.model_card import CardMetrics, ModelCard
from retrieval_pipeline.core.models import check_length, device, loading, locate
from retrieval_pipeline.core.resume import ResumableCrossEncoderTrainer, Resume
from retrieval_pipeline.core.training import shared_arguments
from retrieval_pipeline.families.reranker import CURRICULUM, DATASETS, REPLAY, VARIANTS, Reranker
from retrieval_pipeline.families.reranker.features import model_input, special_tokens
from retrieval_pipeline.families.reranker.params import StageParams
from retrieval_pipeline.families.reranker.scoring import pair_classification, score

STAGE_TEXT = {"stage1": "stage 1 of the curriculum, trained on multi-hop data",
              "stage2": "stage 2 of the curriculum, continued from the stage-1 checkpoint on factual data",
              REPLAY: "the replay variant of stage 2, not in the recipe: continued from the stage-1 "
                      "checkpoint on factual data with {replay:.0%} of the multi-hop pairs replayed"}
CHECKPOINT_CONFIG = "reranker_config.json"


class PairClassificationEvaluator(SentenceEvaluator):
    """F1 at `threshold` and ROC AUC of a cross-encoder's relevance (sigmoid of its logit) over labelled pairs,
    what the recipe's code evaluates and keeps its best checkpoint by."""

    def __init__(self, pairs: pl.DataFrame, use_features: bool, threshold: float, batch_size: int,
                 name: str) -> None:
        super().__init__()
        self.pairs, self.use_features, self.threshold, self.batch_size = pairs, use_features, threshold, batch_size
        self.name, self.primary_metric = name, "f1"

    def __call__(self, model, output_path=None, epoch=-1, steps=-1) -> dict[str, float]:
        metrics = pair_classification(model, self.pairs, self.use_features, self.threshold, self.batch_size)
        metrics = self.prefix_name_to_metrics(metrics, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics


def held_out_examples(pairs: pl.DataFrame, share: float, seed: int) -> pl.Series:
    """Which training pairs the recipe's example-level split holds out: a seeded `share` of them, pair by pair
    (so a query's pairs fall on both sides, as in its code)."""
    held = np.zeros(pairs.height, dtype=bool)
    held[np.random.default_rng(seed).permutation(pairs.height)[:int(round(pairs.height * share))]] = True
    return pl.Series("held_out", held)


def base_cross_encoder(base: str, max_length: int, feature_tokens: list[str] | None, seed: int, key: str,
                       length_key: str):
    """The base encoder with a freshly initialised one-logit head (seeded), and the feature tokens added. `key` and
    `length_key` name the params keys of `base` and `max_length` in errors."""
    from sentence_transformers.cross_encoder import CrossEncoder

    source = locate(base, key)
    set_seed(seed)
    with loading(key, base):
        model = CrossEncoder(source.location, revision=source.revision, num_labels=1, max_length=max_length,
                             device=device(), model_kwargs={"use_safetensors": True})
    check_length(model.model, max_length, length_key)
    if feature_tokens:
        model.tokenizer.add_special_tokens({"additional_special_tokens": feature_tokens})
        model.model.resize_token_embeddings(len(model.tokenizer))
    return model


def pairs_dataset(pairs: pl.DataFrame, use_features: bool):
    from datasets import Dataset

    first = [model_input(query, tokens if use_features else None)
             for query, tokens in pairs.select("query", "feature_tokens").iter_rows()]
    return Dataset.from_dict({"query": first, "sentence": pairs["sentence"].to_list(),
                              "label": pairs["label"].cast(pl.Float32).to_list()})


def held_out_pairs(family: Reranker) -> dict[str, pl.DataFrame]:
    """Each dataset's training pairs the recipe's example-level split held out from training, which every
    checkpoint's F1 is also reported on, as the recipe reports its own (none without that split)."""
    evaluation = family.params.train.evaluation
    if evaluation is None or evaluation.split != "examples":
        return {}
    return {dataset: evaluation_pairs(family, dataset) for dataset in DATASETS}


def variants(family: Reranker) -> list[bool]:
    train = family.params.train
    return [train.use_features] + ([not train.use_features] if train.feature_ablation else [])


def stages(family: Reranker, variant: str) -> list[str]:
    """The checkpoints a variant trains: the published curriculum, then the replay variant where it is set."""
    replay = family.params.train.stage2_replay
    return [*CURRICULUM, *([REPLAY] if replay and variant in replay.variants else [])]


def build_trainer(family: Reranker, model, stage: str, pairs, evaluator: PairClassificationEvaluator | None,
                  output_dir: Path):
    """Binary cross-entropy with logits over the stage's (query, sentence, label) pairs, positives weighted by
    train.pos_weight, at the stage's own learning rate, epochs and warmup; with an evaluator, the best checkpoint by
    its F1 kept and training stopped after the stage's patience."""
    from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
    from transformers import EarlyStoppingCallback

    train = family.params.train
    schedule: StageParams = getattr(train, stage)
    warmup = train.warmup_ratio if schedule.warmup_ratio is None else schedule.warmup_ratio
    if evaluator is None:
        selection = {"save_strategy": "epoch", "save_total_limit": 1}  # a checkpoint to resume from
    else:
        steps = train.evaluation.steps
        selection = {"eval_strategy": "steps" if steps else "epoch", "save_strategy": "steps" if steps else "epoch",
                     **({"eval_steps": steps, "save_steps": steps} if steps else {}), "save_total_limit": 2,
                     "load_best_model_at_end": True, "metric_for_best_model": f"eval_{evaluator.name}_f1",
                     "greater_is_better": True}
    args = CrossEncoderTrainingArguments(
        output_dir=str(output_dir), num_train_epochs=schedule.epochs, learning_rate=schedule.learning_rate,
        per_device_train_batch_size=train.batch_size, per_device_eval_batch_size=family.params.evaluate.batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps, weight_decay=train.weight_decay,
        logging_steps=train.logging_steps, **selection,
        **shared_arguments(family.params.seed, train.bf16, warmup, fp16=train.fp16))
    loss = BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(train.pos_weight))
    callbacks = [EarlyStoppingCallback(schedule.early_stopping_patience)] \
        if evaluator is not None and schedule.early_stopping_patience else []
    return ResumableCrossEncoderTrainer(model=model, args=args, train_dataset=pairs, loss=loss, evaluator=evaluator,
                                        callbacks=callbacks)


def training_pairs(family: Reranker, dataset: str, split: str = "train") -> pl.DataFrame:
    """A dataset's labelled pairs of the `split` queries; with the recipe's example-level evaluation, the training
    queries' pairs carry a `held_out` column (held_out_examples)."""
    pool = pl.read_parquet(family.paths.mined / f"{dataset}.parquet")
    pairs = pool.filter((pl.col("split") == split) & pl.col("train_pair"))
    evaluation = family.params.train.evaluation
    if split == "train" and evaluation is not None and evaluation.split == "examples":
        pairs = pairs.with_columns(held_out_examples(pairs, evaluation.share, family.params.seed))
    return pairs


def trained_on(pairs: pl.DataFrame) -> pl.DataFrame:
    return pairs.filter(~pl.col("held_out")) if "held_out" in pairs.columns else pairs


def evaluation_pairs(family: Reranker, dataset: str) -> pl.DataFrame | None:
    """The pairs a stage training on `dataset` is evaluated on (train.evaluation): the training pairs held out
    from it, or the dev queries' pairs; None without an evaluation."""
    evaluation = family.params.train.evaluation
    if evaluation is None:
        return None
    if evaluation.split == "dev_queries":
        return training_pairs(family, dataset, "dev")
    pairs = training_pairs(family, dataset)
    return pairs.filter(pl.col("held_out"))


def stage_pairs(family: Reranker, stage: str) -> pl.DataFrame:
    """A stage's training pairs: multi-hop (stage 1), factual (stage 2), or factual with replayed multi-hop."""
    if stage == "stage1":
        return trained_on(training_pairs(family, "multihop"))
    factual = trained_on(training_pairs(family, "factual"))
    if stage == "stage2":
        return factual
    multihop = trained_on(training_pairs(family, "multihop"))
    replayed = multihop.sample(fraction=family.params.train.stage2_replay.replay, seed=family.params.seed)
    return pl.concat([factual, replayed]).sample(fraction=1.0, shuffle=True, seed=family.params.seed)


def stage_evaluator(family: Reranker, stage: str, use_features: bool) -> PairClassificationEvaluator | None:
    """Stage 1 is evaluated on multi-hop pairs, stage 2 and its replay variant on factual ones."""
    dataset = "multihop" if stage == "stage1" else "factual"
    pairs = evaluation_pairs(family, dataset)
    if pairs is None:
        return None
    if pairs["label"].n_unique() < 2:
        raise DataError(f"{family.key('train.evaluation')}: the {dataset} pairs held out for evaluation hold "
                        f"{'no pair' if pairs.is_empty() else 'one label only'}; expected positives and negatives "
                        f"(raise {family.key('train.evaluation.share')} or {family.key('data.dev_size')})")
    return PairClassificationEvaluator(pairs, use_features, family.params.train.evaluation.threshold,
                              family.params.evaluate.batch_size, f"{dataset}_held_out")


def train(family: Reranker) -> None:
    resume = Resume(family, "train")
    features = family.params.mine.features
    scores: dict[str, Scores] = {}
    with atomic_directory(family.paths.model) as out:
        for use_features in variants(family):
            variant = VARIANTS[use_features]
            for stage in stages(family, variant):
                run = f"{variant}_{stage}"
                log, label = family.paths.training_log / run, f"train {variant} {stage}"
                kept = resume.finished(run, out / variant / stage, log, label)
                if kept is not None:
                    scores.update(kept)
                    continue
                if stage == "stage1":
                    model = base_cross_encoder(family.params.model.base, family.params.model.max_length,
                                               special_tokens(features) if use_features else None,
                                               family.params.seed, family.key("model.base"),
                                               family.key("model.max_length"))
                else:  # stage 2 (and its replay variant) continues from the saved stage-1 checkpoint
                    model = load_cross_encoder(str(out / variant / "stage1"), "the stage-1 checkpoint")
                pairs = pairs_dataset(stage_pairs(family, stage), use_features)
                trainer = build_trainer(family, model, stage, pairs, stage_evaluator(family, stage, use_features),
                                        resume.output_dir(run))
                print(f"train: {variant} {stage}: {len(pairs)} pairs")
                resume.train(trainer, run, log, label)
                model_label = f"{variant}/{stage}"
                scores[model_label] = score(family, model, use_features, model_label, held_out_pairs(family))
                save(family, model, out / variant / stage, variant, stage, use_features, scores[model_label],
                     len(pairs))
                resume.keep(run, out / variant / stage, log, {model_label: scores[model_label]})
    write_scores(family.paths.trained_scores, scores)
    resume.close()


def save(family: Reranker, model, folder: Path, variant: str, stage: str, use_features: bool, scores: Scores,
         training_pairs: int) -> None:
    model.save_pretrained(str(folder))  # its own card is replaced by ours below
    (folder / CHECKPOINT_CONFIG).write_text(json.dumps({"use_features": use_features}) + "\n", encoding="utf-8")
    test_queries = scores.tables["per_query"].select("dataset", "query_id").unique().height
    card(family, variant, stage, use_features, scores.metrics, test_queries, training_pairs).write(folder)


def card(family: Reranker, variant: str, stage: str, use_features: bool, metrics: dict[str, dict],
         test_queries: int, training_pairs: int) -> ModelCard:
    train, data = family.params.train, family.params.data
    schedule: StageParams = getattr(train, stage)
    stage_text = STAGE_TEXT[stage].format(replay=getattr(schedule, "replay", 0))
    trained_on = [("multihop",)] if stage == "stage1" else [("factual",)] if stage == "stage2" else \
        [("factual",), ("multihop",)]
    sources = " and ".join(f"{getattr(data, name).describe()} ({name})" for (name,) in trained_on)
    input_format = ("`[HOP:h] [ROLE:r] [ENT:e1,e2] [CAUSAL] [REASONING] query [SEP] sentence`, the feature "
                    "tokens being special tokens of this checkpoint's tokenizer (build them with "
                    "`retrieval_pipeline.families.reranker.features.SentenceFeatures`, as the mine stage does)"
                    if use_features else "`query [SEP] sentence`")
    return ModelCard.of(
        family,
        title=f"Reranker ({variant}, {stage})",
        summary=(f"A cross-encoder that scores (query, sentence) pairs with one logit (sigmoid = relevance): "
                 f"{stage_text}, with binary cross-entropy (pos_weight {train.pos_weight}) at learning rate "
                 f"{schedule.learning_rate}. Input: {input_format}. F1 is at each dataset's threshold "
                 f"(`evaluate.threshold`: {family.params.evaluate.threshold})."),
        base_model=family.params.model.base,
        training_data=f"{sources}: {training_pairs} labelled pairs, positives with hard and easy negatives",
        hub_datasets=[name for source in DATASETS for name in getattr(data, source).hub_datasets()],
        metrics=CardMetrics(dataset=", ".join(dict.fromkeys(getattr(data, name).describe() for name in DATASETS)),
                            queries=test_queries, task="reranking", baseline="the first-stage ranking",
                            rows={f"{source} test candidates": metrics[source] for source in DATASETS},
                            columns=["ndcg@10", "map", "mrr@10", "f1", "threshold", "auc"]),
        usage=f"""from sentence_transformers.cross_encoder import CrossEncoder
model = CrossEncoder("models/{family.name}/{variant}/{stage}")
scores = model.predict([("Who runs the Kestrel plant?", "Kestrel is run by Sable.")])""",
        library_name="sentence-transformers", pipeline_tag="text-ranking",
        tags=["cross-encoder", "reranker", variant, stage])
