"""Throughput of the family's training step and encoding path against a bare sentence-transformers loop.

Both sides work on the same batch; compare them in the `--benchmark-group-by=group` table.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import polars as pl
import pytest
import torch
from helpers import TINY_MATRYOSHKA, FamilyStages, write_params

from retrieval_pipeline.core.collection import load_collection
from retrieval_pipeline.core.params import deep_merge
from retrieval_pipeline.core.training import shared_arguments
from retrieval_pipeline.families.matryoshka.model import load_model
from retrieval_pipeline.families.matryoshka.scoring import rank_at_dims
from retrieval_pipeline.families.matryoshka.train import build_trainer

BATCH = 32


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    write_params(root, deep_merge(TINY_MATRYOSHKA, {"matryoshka": {"embedded": {
        "train": {"batch_size": BATCH}, "data": {"synthetic": {"facilities": 8}}}}}))
    family = FamilyStages("matryoshka", root)
    family.prepare()
    return family


def training_pairs(family) -> pl.DataFrame:
    return load_collection(family.paths.prepared).pairs("train").select(anchor="query", positive="document")


@pytest.fixture(scope="module")
def pairs(family):
    """One batch of pairs with distinct texts, so the no-duplicates sampler keeps all of them."""
    train = training_pairs(family)
    distinct = train.unique("positive", keep="first", maintain_order=True) \
        .unique("anchor", keep="first", maintain_order=True)
    return distinct.head(BATCH).select("anchor", "positive")


def fresh_model(family):
    return load_model(family.family, family.params.model.base, "the base model")


@pytest.mark.benchmark(group="train step (batch 32)")
def test_family_training_step(benchmark, family, pairs, tmp_path):
    from datasets import Dataset

    model = fresh_model(family)
    trainer = build_trainer(family.stage("train"), model, tmp_path / "checkpoints")
    trainer.train_dataset = Dataset.from_polars(pairs)
    trainer.create_optimizer_and_scheduler(num_training_steps=100)
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["anchor_input_ids"].shape[0] == BATCH

    def step():
        trainer.compute_loss(trainer.model, batch).backward()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()

    benchmark.pedantic(step, rounds=3, warmup_rounds=1)


@pytest.mark.benchmark(group="train step (batch 32)")
def test_bare_training_step(benchmark, family, pairs):
    from sentence_transformers.losses import MatryoshkaLoss, MultipleNegativesRankingLoss

    model = fresh_model(family)
    loss = MatryoshkaLoss(model, MultipleNegativesRankingLoss(model), family.params.model.dims)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)

    def step():
        features = [model.tokenize(pairs["anchor"].to_list()), model.tokenize(pairs["positive"].to_list())]
        loss(features, None).backward()
        optimizer.step()
        optimizer.zero_grad()

    benchmark.pedantic(step, rounds=3, warmup_rounds=1)


@pytest.fixture(scope="module")
def texts(family):
    collection = load_collection(family.paths.prepared)
    return collection.split("test")[0], collection.corpus


@pytest.mark.benchmark(group="encode queries + corpus")
def test_family_encoding_and_ranking(benchmark, family, minilm, texts):
    queries, corpus = texts
    benchmark.pedantic(rank_at_dims, args=(minilm, queries, corpus, family.params.model.dims, BATCH, 100),
                       rounds=3, warmup_rounds=1)


@pytest.mark.benchmark(group="encode queries + corpus")
def test_bare_encoding(benchmark, minilm, texts):
    queries, corpus = texts

    def encode():
        minilm.encode(corpus["text"].to_list(), batch_size=BATCH)
        minilm.encode(queries["text"].to_list(), batch_size=BATCH)

    benchmark.pedantic(encode, rounds=3, warmup_rounds=1)


# A whole train stage (epochs, per-epoch dev evaluation, checkpoint selection, the test scoring for the model card,
# saving) against a bare sentence-transformers trainer on the same pairs, epochs and batch size, and against
# sentence-transformers' trainer doing the stage's own dev evaluation and checkpoint saves (the recipe as a user of
# sentence-transformers alone would run it). The ratios of their pairs/s go into docs/throughput.md.
STAGE_GROUP = "whole matryoshka train stage (embedded profile)"
STAGE_RESULTS: dict[str, dict] = {}
THROUGHPUT = Path(__file__).resolve().parents[2] / "docs" / "throughput.md"


@pytest.fixture(scope="module")
def stage_family(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage-bench")
    write_params(root)  # the embedded profile as `dvc repro` runs it
    family = FamilyStages("matryoshka", root)
    family.prepare()
    return family


def stage_breakdown(training_log: Path, seconds: float) -> dict:
    """Where the stage's seconds went, from its DVCLive log: trainer.train() (its steps and checkpoint saves, and
    its dev evaluations, each timed by the trainer) and the rest (model load, test scoring, saving the model)."""
    train = json.loads((training_log / "metrics.json").read_text(encoding="utf-8"))["train"]["runtime"]
    evaluations = pl.read_csv(training_log / "plots" / "metrics" / "eval" / "runtime.tsv", separator="\t")["runtime"]
    return {"steps": train - evaluations.sum(), "evaluations": evaluations.to_list(), "around": seconds - train}


def record_stage(name: str, seconds: float, pairs: int, epochs: int, breakdown: dict | None = None) -> None:
    STAGE_RESULTS[name] = {"seconds": seconds, "pairs": pairs, "epochs": epochs,
                           "pairs_per_s": pairs * epochs / seconds, "breakdown": breakdown}
    write_throughput()


def write_throughput() -> None:
    """docs/throughput.md, once the three trainers and the dev corpus sizes have run."""
    if set(STAGE_RESULTS) != {"train stage", "bare trainer", SELECTING} or not DEV_EVALUATIONS:
        return
    family, bare, selecting = STAGE_RESULTS["train stage"], STAGE_RESULTS["bare trainer"], STAGE_RESULTS[SELECTING]
    parts = family["breakdown"]
    evaluations = sum(parts["evaluations"])
    stage_label = " (the stage's)"
    THROUGHPUT.write_text("\n".join([
        "# Training throughput", "",
        "Written by `make bench` (tests/benchmarks/test_throughput.py): the matryoshka train stage as `dvc repro` "
        "runs it (embedded profile, its synthetic data) against a bare sentence-transformers trainer "
        "with the same loss, pairs, epochs and batch size and no evaluation or saving, and against "
        "sentence-transformers' own trainer with the stage's training arguments and dev evaluator (its evaluation and "
        "checkpoint saves each epoch, the best epoch loaded at the end, nothing around it), one after the other in "
        f"one run on this machine ({platform.machine()}, {os.cpu_count()} CPUs).", "",
        "| run | pairs x epochs | seconds | pairs/s |", "|---|---|---|---|",
        *(f"| {name} | {r['pairs']} x {r['epochs']} | {r['seconds']:.1f} | {r['pairs_per_s']:.2f} |"
          for name, r in STAGE_RESULTS.items()), "",
        "Where the train stage's seconds went (the trainer times each dev evaluation; DVCLive logs it):", "",
        "| part | seconds |", "|---|---|",
        f"| steps and checkpoint saves | {parts['steps']:.1f} |",
        f"| dev evaluations ({len(parts['evaluations'])}: "
        f"{', '.join(f'{value:.1f}' for value in parts['evaluations'])} s) | {evaluations:.1f} |",
        f"| around the trainer (model load, test scoring, saving the model) | {parts['around']:.1f} |", "",
        f"The train stage reaches {family['pairs_per_s'] / bare['pairs_per_s']:.2f}x the bare trainer's pairs/s, and "
        f"{family['pairs_per_s'] / selecting['pairs_per_s']:.2f}x those of sentence-transformers' trainer selecting "
        f"its checkpoint the same way, which itself reaches {selecting['pairs_per_s'] / bare['pairs_per_s']:.2f}x the "
        "bare trainer's. "
        f"Its training steps with their checkpoint saves run at {bare['seconds'] / parts['steps']:.2f}x the bare "
        f"trainer's speed; the dev evaluations that select the checkpoint take {evaluations / parts['steps']:.1%} "
        "of the steps' time, so a stage that selects its checkpoint by "
        "a dev evaluation each epoch stays under the bare trainer by about that much.", "",
        "## What the dev evaluation costs by the documents it searches", "",
        "The same train stage once more, with the dev evaluation of every epoch also run, and timed, on smaller "
        "dev corpora (every judged document plus a seeded sample of the others, as `evaluate.dev_corpus_size` "
        f"draws them; {DEV_EVALUATIONS['judged']} documents are judged for the "
        f"{DEV_EVALUATIONS['queries']} dev queries). "
        "The last column is the train stage's pairs/s over the bare trainer's with the evaluations of that size in "
        "place of the stage's own, the other parts as measured above.", "",
        f"| dev corpus (documents) | seconds per evaluation | {DEV_EVALUATIONS['metric']} by epoch | epoch kept | "
        "train stage / bare trainer |", "|---|---|---|---|---|",
        *(f"| {size}{stage_label if size == DEV_EVALUATIONS['stage'] else ''} | {row['seconds']:.2f} | "
          f"{' / '.join(f'{value:.4f}' for value in row['curve'])} | {row['epoch']} of {len(row['curve'])} | "
          f"{bare['seconds'] / (parts['steps'] + row['seconds'] * len(row['curve']) + parts['around']):.2f}x |"
          for size, row in DEV_EVALUATIONS["rows"].items()), ""]),
        encoding="utf-8")


@pytest.mark.benchmark(group=STAGE_GROUP)
def test_whole_train_stage(benchmark, stage_family):
    pairs = training_pairs(stage_family).height
    start = time.perf_counter()
    benchmark.pedantic(stage_family.train, rounds=1, iterations=1)
    seconds = time.perf_counter() - start
    record_stage("train stage", seconds, pairs, stage_family.params.train.epochs,
                 stage_breakdown(stage_family.paths.training_log, seconds))


@pytest.mark.benchmark(group=STAGE_GROUP)
def test_bare_trainer_on_the_same_pairs(benchmark, stage_family, tmp_path):
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.losses import MatryoshkaLoss, MultipleNegativesRankingLoss
    from sentence_transformers.training_args import BatchSamplers

    train, dims = stage_family.params.train, stage_family.params.model.dims
    pairs = training_pairs(stage_family)
    model = fresh_model(stage_family)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path), num_train_epochs=train.epochs, per_device_train_batch_size=train.batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps, learning_rate=train.learning_rate,
        lr_scheduler_type=train.lr_scheduler, optim=train.optimizer, batch_sampler=BatchSamplers.NO_DUPLICATES,
        save_strategy="no", **shared_arguments(stage_family.params.seed, train.bf16, train.warmup_ratio))
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=Dataset.from_polars(pairs),
                                         loss=MatryoshkaLoss(model, MultipleNegativesRankingLoss(model), dims))
    start = time.perf_counter()
    benchmark.pedantic(trainer.train, rounds=1, iterations=1)
    record_stage("bare trainer", time.perf_counter() - start, pairs.height, train.epochs)


SELECTING = "sentence-transformers' trainer, the stage's evaluation and saves"


@pytest.mark.benchmark(group=STAGE_GROUP)
def test_trainer_selecting_like_the_stage(benchmark, stage_family, tmp_path):
    from sentence_transformers import SentenceTransformerTrainer

    stage = build_trainer(stage_family.stage("train"), fresh_model(stage_family), tmp_path / "checkpoints")
    trainer = SentenceTransformerTrainer(model=stage.model, args=stage.args, train_dataset=stage.train_dataset,
                                         loss=stage.loss, evaluator=stage.evaluator)
    start = time.perf_counter()
    benchmark.pedantic(trainer.train, rounds=1, iterations=1)
    assert trainer.state.best_model_checkpoint is not None
    record_stage(SELECTING, time.perf_counter() - start, training_pairs(stage_family).height,
                 stage_family.params.train.epochs)


# The dev evaluation at several dev corpus sizes, on the checkpoints of one more run of the same train stage.
DEV_CORPUS_SIZES = [300, 200, 150, 100]
DEV_EVALUATIONS: dict = {}


@pytest.mark.benchmark(group=STAGE_GROUP)
def test_dev_evaluation_by_dev_corpus_size(benchmark, stage_family, tmp_path):
    from transformers import TrainerCallback

    from retrieval_pipeline.core.retrieval import bounded_corpus
    from retrieval_pipeline.families.matryoshka.train import DimensionEvaluator

    family, params = stage_family.stage("train"), stage_family.params
    collection = load_collection(stage_family.paths.prepared)
    queries, qrels = collection.split("dev")
    judged = {document for documents in qrels.values() for document in documents}
    dim = params.train.best_checkpoint_dim
    stage_size = min(params.evaluate.dev_corpus_size, collection.corpus.height)
    sizes = sorted({stage_size, *DEV_CORPUS_SIZES}, reverse=True)
    evaluators = {size: DimensionEvaluator(queries, bounded_corpus(collection.corpus, judged, size, params.seed),
                                           qrels, [dim], dim, params.evaluate.batch_size) for size in sizes}
    timings: dict[int, list[float]] = {size: [] for size in sizes}
    curves: dict[int, list[float]] = {size: [] for size in sizes}

    class EverySize(TrainerCallback):
        def on_evaluate(self, args, state, control, model=None, **kwargs):
            for size, evaluator in evaluators.items():
                start = time.perf_counter()
                curves[size].append(evaluator(model)[evaluator.primary_metric])
                timings[size].append(time.perf_counter() - start)

    trainer = build_trainer(family, fresh_model(stage_family), tmp_path / "checkpoints")
    trainer.add_callback(EverySize())
    benchmark.pedantic(trainer.train, rounds=1, iterations=1)
    assert all(len(curve) == params.train.epochs for curve in curves.values())
    DEV_EVALUATIONS.update(
        judged=len(judged), queries=queries.height, metric=evaluators[stage_size].primary_metric, stage=stage_size,
        rows={size: {"seconds": sum(timings[size]) / len(timings[size]), "curve": curves[size],
                     "epoch": curves[size].index(max(curves[size])) + 1} for size in sizes})
    write_throughput()
