"""The small interface every model family implements, one module per family."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import polars as pl

from retrieval_pipeline.core.io import atomic_directory
from retrieval_pipeline.core.model_card import ModelCard
from retrieval_pipeline.core.params import FamilyParams
from retrieval_pipeline.core.paths import FamilyPaths
from retrieval_pipeline.core.preflight import Requirement, TrainingRun
from retrieval_pipeline.core.sources import DataError

STAGES = ("prepare", "mine", "baseline", "train", "evaluate")


@dataclass
class Scores:
    """One model's results on the held-out data: a metrics tree (JSON) and row tables (per query, rankings), each
    table carrying the model's label in a `model` column."""

    metrics: dict
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)


def write_result(folder: Path, metrics: dict, tables: dict[str, pl.DataFrame]) -> None:
    """metrics.json and a parquet file per table, in `folder` (inside an atomic_directory)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    for name, table in tables.items():
        table.write_parquet(folder / f"{name}.parquet")


def write_scores(folder: Path, scores: dict[str, Scores]) -> None:
    """`folder/<label>/` per model (a label may hold a slash: `plain/stage2`), in one move."""
    with atomic_directory(folder) as out:
        for label, result in scores.items():
            write_result(out / label, result.metrics, result.tables)


def read_scores(folder: Path) -> dict[str, Scores]:
    if not folder.is_dir():
        raise DataError(f"{folder}: no scores; expected this folder from the stage that writes it (`dvc repro`)")
    scores = {}
    for metrics in sorted(folder.rglob("metrics.json")):
        label = metrics.parent.relative_to(folder).as_posix()
        tables = {table.stem: pl.read_parquet(table) for table in sorted(metrics.parent.glob("*.parquet"))}
        scores[label] = Scores(json.loads(metrics.read_text(encoding="utf-8")), tables)
    return scores


def concat_tables(scores: dict[str, Scores], name: str) -> pl.DataFrame:
    """One table (e.g. per_query) of several models, stacked in the models' order."""
    return pl.concat([result.tables[name] for result in scores.values() if name in result.tables], how="vertical")


class Family(ABC):
    """A family's DVC stages. `params` is its validated params section."""

    name: ClassVar[str]
    recipe: ClassVar[str]  # which recipe of docs/recipes.md it reproduces, for the model cards
    Params: ClassVar[type[FamilyParams]]

    def __init__(self, params: FamilyParams, profile: str, root: Path) -> None:
        self.params = params
        self.profile = profile
        self.paths = FamilyPaths(root, self.name)

    @abstractmethod
    def prepare(self) -> None:
        """Read the source data and write versioned train/evaluation datasets."""

    @abstractmethod
    def mine(self) -> None:
        """Mine hard negatives for the training data with the base model."""

    @abstractmethod
    def train(self) -> None:
        """Fine-tune the base model and save a safetensors checkpoint with a model card."""

    @abstractmethod
    def baseline_scores(self) -> dict[str, Scores]:
        """The models that fine-tuning is measured against (the base model, a first stage), scored on the held-out
        queries exactly as the trained ones are."""

    @abstractmethod
    def compare(self, scores: dict[str, Scores]) -> None:
        """From the baseline's and the trained models' scores, write eval/<family>/ (metrics, tables, plots)."""

    def baseline(self) -> None:
        """Its own stage, so that a training experiment reuses the baseline instead of scoring it again."""
        write_scores(self.paths.baseline_scores, self.baseline_scores())

    def evaluate(self) -> None:
        """Compares scores computed once: the baseline stage's, and those the train stage wrote (its model cards
        carry the same numbers)."""
        self.compare({**read_scores(self.paths.baseline_scores), **read_scores(self.paths.trained_scores)})

    @abstractmethod
    def requirements(self) -> list[Requirement]:
        """Every model and hub dataset the stages load, with the params key that names it (preflight)."""

    @abstractmethod
    def training_runs(self) -> list[TrainingRun]:
        """Each training run's model and micro-step shape, for the preflight's GPU memory estimate."""

    def model_card(self, **card) -> ModelCard:
        """A card for one of this family's checkpoints, with the family, profile and params filled in."""
        return ModelCard(family=self.name, recipe=self.recipe, profile=self.profile,
                         params=self.params.model_dump(mode="json"), **card)

    def write_evaluation(self, metrics: dict, tables: dict[str, pl.DataFrame],
                         plots: dict[str, str] | None = None) -> None:
        """eval/<family>/ in one move: metrics.json, a parquet file per table (per_query, runs...) and a CSV per
        plot. The report stage publishes the metrics and plots into metrics/, which git tracks."""
        with atomic_directory(self.paths.evaluation) as out:
            write_result(out, metrics, tables)
            for name, text in (plots or {}).items():
                (out / self.paths.plot(name).name).write_text(text)
