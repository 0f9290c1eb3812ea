"""The small interface every model family implements, one module per family."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import polars as pl
from pydantic import BaseModel

from retrieval_pipeline.core.io import atomic_directory
from retrieval_pipeline.core.model_card import ModelCard
from retrieval_pipeline.core.paths import FamilyPaths
from retrieval_pipeline.core.preflight import Requirement, TrainingRun

STAGES = ("prepare", "mine", "train", "evaluate")


class Family(ABC):
    """A family's four DVC stages. `params` is its validated params section."""

    name: ClassVar[str]
    recipe: ClassVar[str]  # which recipe of docs/recipes.md it reproduces, for the model cards
    Params: ClassVar[type[BaseModel]]

    def __init__(self, params: BaseModel, profile: str, root: Path) -> None:
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
    def evaluate(self) -> None:
        """Score base and fine-tuned models on the same held-out queries; write metrics."""

    @abstractmethod
    def requirements(self) -> list[Requirement]:
        """Every model and hub dataset the four stages load, with the params key that names it (preflight)."""

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
            for name, table in tables.items():
                table.write_parquet(out / f"{name}.parquet")
            (out / self.paths.metrics.name).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
            for name, text in (plots or {}).items():
                (out / self.paths.plot(name).name).write_text(text)
