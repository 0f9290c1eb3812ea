"""The small interface every model family implements, one package per family, and the values it hands over.

A family package `families/<name>/` exports FAMILY, a Family subclass that names the family, its recipe, its params
model and the model labels its stages produce, and says which module of the package holds each stage. A stage
module implements its stage's Protocol below: one function named after the stage, taking the family:

- prepare(family), mine(family), train(family): write the stage's outputs;
- base(family), optional: the model fine-tuning starts from, where the family makes one (data/<family>/base/);
  without it the stage records that model.base is fine-tuned as it is;
- baseline(family) -> {label: Scores}: the models fine-tuning is measured against, scored on the held-out queries
  (the stage runner writes them to scores/<family>/baseline);
- evaluate(family, scores): compares every model's Scores (the baseline's and those the train stage wrote) into
  eval/<family>/.

So a stage imports its own module and what that reaches, and DVC reruns it for nothing else.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

import polars as pl

from retrieval_pipeline.core.errors import DataError
from retrieval_pipeline.core.io import atomic_directory
from retrieval_pipeline.core.params import FamilyParams, field_exists, profile_key
from retrieval_pipeline.core.paths import FamilyPaths
from retrieval_pipeline.core.sources import HubSource, SourceParams

STAGES = ("prepare", "base", "mine", "baseline", "train", "evaluate")
OPTIONAL_STAGES = ("base",)  # the stage runner writes a family without one its default output


@dataclass(frozen=True)
class Requirement:
    """A model or hub dataset a family loads, the params key that names it, and the stages that load it."""

    kind: str  # "model" or "dataset"
    key: str
    stages: str
    model: str | None = None
    dataset: HubSource | None = None


@dataclass(frozen=True)
class TrainingRun:
    """One training run: the model it trains and the shape of one optimizer micro-step on one device."""

    stage: str
    model: str
    key: str
    sequences: int  # texts through the encoder per micro-step (e.g. batch x (anchor + positive))
    tokens: int | None  # the length they are truncated to; None: the model's own maximum
    bf16: bool
    copies: int = 1  # independent copies of the model trained together (DPR's two towers)


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
    """A family with its validated params, as one stage sees them (see core/stage.py)."""

    name: ClassVar[str]
    recipe: ClassVar[str]  # which recipe of docs/recipes.md it reproduces, for the model cards
    Params: ClassVar[type[FamilyParams]]
    labels: ClassVar[tuple[str, ...]]  # every model label its stages can produce, in the order reports show them
    stages: ClassVar[dict[str, str]]  # stage -> the module of the family's package that holds it
    # The data source (a dotted key of Params, a SourceParams) that params.yaml's top-level `collection` replaces
    # with its BEIR folder or hub dataset: what the family trains, selects checkpoints and is tested on.
    collection_source: ClassVar[str] = "data"

    def __init__(self, params: FamilyParams, profile: str, root: Path, overridden: Collection[str] = (),
                 applied: Mapping[str, str] = {}) -> None:
        self.params = params
        self.profile = profile
        self.paths = FamilyPaths(root, self.name)
        self.overridden = tuple(overridden)  # keys (inside the section) the embedded override sets
        # keys (inside the section, longest first) set from a top-level key of params.yaml -> that key (`collection`)
        self.applied = dict(sorted(applied.items(), key=lambda item: -len(item[0])))

    def key(self, path: str) -> str:
        """The params key a user edits for `path` (e.g. "model.base") under the active profile, for messages: a
        top-level key's where one set it. The path is checked against the params model, so a message can never name
        a key that does not exist."""
        if not field_exists(self.Params, path):
            raise ValueError(f"{self.name}: {path!r} is not a key of {self.Params.__name__}")
        for inner, top in self.applied.items():
            if path == inner or path.startswith(f"{inner}."):
                return top + path[len(inner):]
        return profile_key(self.name, path, self.profile, self.overridden)

    @abstractmethod
    def requirements(self) -> list[Requirement]:
        """Every model and hub dataset the stages load, with the params key that names it (preflight)."""

    @abstractmethod
    def training_runs(self) -> list[TrainingRun]:
        """Each training run's model and micro-step shape, for the preflight's GPU memory estimate."""

    def hub_dataset(self, source: SourceParams, path: str) -> list[Requirement]:
        """The hub datasets a data source at `path` (e.g. "data") reads, for the preflight; none for other sources."""
        if source.source == "hf":
            return [Requirement("dataset", self.key(f"{path}.hf"), "prepare", dataset=source.hf)]
        if source.source == "hf_beir":
            splits = source.hf_beir.splits
            return [Requirement("dataset", self.key(f"{path}.hf_beir.{part}"), "prepare", dataset=dataset)
                    for part, dataset in source.hf_beir.datasets((splits.train, splits.test))]
        return []

    def write_evaluation(self, metrics: dict, tables: dict[str, pl.DataFrame],
                         plots: dict[str, str] | None = None) -> None:
        """eval/<family>/ in one move: metrics.json, a parquet file per table (per_query, runs...) and a CSV per
        plot. The report stage publishes the metrics and plots into metrics/, which git tracks."""
        with atomic_directory(self.paths.evaluation) as out:
            write_result(out, metrics, tables)
            for name, text in (plots or {}).items():
                (out / self.paths.plot(name).name).write_text(text)


# A stage module is checked against its stage's Protocol when the stage runner imports it (core/stage.py), and a
# type checker reads a module as implementing a Protocol whose methods are its functions (PEP 544).
@runtime_checkable
class PrepareStage(Protocol):
    def prepare(self, family: Family) -> None: ...


@runtime_checkable
class BaseStage(Protocol):
    def base(self, family: Family) -> None: ...


@runtime_checkable
class MineStage(Protocol):
    def mine(self, family: Family) -> None: ...


@runtime_checkable
class BaselineStage(Protocol):
    def baseline(self, family: Family) -> dict[str, Scores]: ...


@runtime_checkable
class TrainStage(Protocol):
    def train(self, family: Family) -> None: ...


@runtime_checkable
class EvaluateStage(Protocol):
    def evaluate(self, family: Family, scores: dict[str, Scores]) -> None: ...


STAGE_INTERFACES: dict[str, type] = {"prepare": PrepareStage, "base": BaseStage, "mine": MineStage,
                                     "baseline": BaselineStage, "train": TrainStage, "evaluate": EvaluateStage}
