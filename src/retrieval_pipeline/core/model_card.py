"""The model card (README.md) in every checkpoint directory: what the model is, its recipe, data and
profile, what it scored, how to load it, and the params it was trained with.

The scores are measured by the train stage itself, on the held-out test split with the evaluate
stage's own scoring code: DVC lets only the stage that writes a checkpoint write into it, and this is
how sentence-transformers fills a card from the evaluators its trainer ran. The card's front matter
carries them as a Hugging Face `model-index`, so the hub shows them if the model is pushed there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from retrieval_pipeline.core.io import atomic_write_text
from retrieval_pipeline.core.sources import PACKAGE_PREFIX, split_revision

METRIC_NAMES = {"ndcg": "NDCG", "mrr": "MRR", "map": "MAP", "recall": "Recall", "precision": "Precision",
                "accuracy": "Accuracy", "f1": "F1", "auc": "AUC", "vectors_per_document": "vectors per document",
                "bytes_per_vector": "bytes per vector"}
TRAINING_SECTIONS = ("seed", "model", "mine", "train")


def metric_label(key: str) -> str:
    """`ndcg@10` -> `NDCG@10`; keys without a known name are shown as they are."""
    name, _, cutoff = key.partition("@")
    return METRIC_NAMES.get(name, name) + (f"@{cutoff}" if cutoff else "")


@dataclass(frozen=True)
class CardMetrics:
    """Scores of one checkpoint, one row per setting (a dimension, a dataset, a pool factor)."""

    dataset: str  # where the test queries come from, e.g. "synthetic world"
    queries: int  # how many test queries were scored
    rows: dict[str, dict[str, float]]
    columns: list[str]  # the metric keys shown, in order; the first one goes into the model-index
    task: str  # the model-index task type, e.g. "retrieval" or "reranking"
    baseline: str = "the base model"  # what the evaluate stage compares it with


@dataclass(frozen=True)
class ModelCard:
    title: str
    summary: str  # what the checkpoint is and how it differs from its siblings
    recipe: str
    family: str
    profile: str
    base_model: str
    training_data: str
    params: dict[str, Any]  # the family's validated params, profile applied
    metrics: CardMetrics
    usage: str  # Python that loads the checkpoint and uses it
    library_name: str
    pipeline_tag: str
    tags: list[str]
    hub_datasets: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, family, **card) -> ModelCard:
        """A card for one of `family`'s checkpoints, with the family, its recipe, profile and params filled in."""
        return cls(family=family.name, recipe=family.recipe, profile=family.profile,
                   params=family.params.model_dump(mode="json"), **card)

    def front_matter(self) -> str:
        from huggingface_hub import EvalResult, ModelCardData

        headline = self.metrics.columns[0]
        results = [EvalResult(task_type=self.metrics.task, dataset_type=", ".join(self.hub_datasets) or "local",
                              dataset_name=self.metrics.dataset, dataset_split="test",
                              metric_type=headline.replace("@", "_at_"), metric_value=round(values[headline], 4),
                              metric_name=f"{metric_label(headline)} ({setting})")
                   for setting, values in self.metrics.rows.items()]
        # A package reference or a local path is not a hub id, so it is named in the text only.
        base = None if self.base_model.startswith(PACKAGE_PREFIX) or Path(self.base_model).exists() else \
            split_revision(self.base_model)[0]
        data = ModelCardData(model_name=self.title, base_model=base, datasets=self.hub_datasets or None,
                             library_name=self.library_name, pipeline_tag=self.pipeline_tag,
                             tags=list(dict.fromkeys([self.family, *self.tags])), eval_results=results)
        return data.to_yaml()

    def render(self) -> str:
        columns = self.metrics.columns
        table = ["| setting | " + " | ".join(metric_label(c) for c in columns) + " |",
                 "|---" * (len(columns) + 1) + "|"]
        table += [f"| {setting} | " + " | ".join(_number(values[c]) for c in columns) + " |"
                  for setting, values in self.metrics.rows.items()]
        trained_with = {key: self.params[key] for key in TRAINING_SECTIONS if key in self.params}
        return "\n".join([
            "---", self.front_matter().rstrip(), "---", f"# {self.title}", "", self.summary, "",
            f"- Recipe: {self.recipe}",
            f"- Profile: `{self.profile}` (the `profile` key of params.yaml)",
            f"- Base model: `{self.base_model}`",
            f"- Training data: {self.training_data}",
            "", "## Evaluation", "",
            f"Scored by the train stage on the test split of {self.metrics.dataset} ({self.metrics.queries} "
            f"queries). The evaluate stage compares these same scores (`scores/{self.family}/trained`) with "
            f"{self.metrics.baseline}, with significance tests, in `metrics/families/{self.family}.json` and "
            "`metrics/report.md`.", "", *table,
            "", "## How to load", "",
            "The weights are safetensors, so loading unpickles nothing.", "",
            "```python", self.usage.strip(), "```",
            "", "## Training parameters", "",
            f"The `{self.family}` section of params.yaml as it ran (profile `{self.profile}` applied); "
            f"`dvc repro train@{self.family}` rebuilds this checkpoint from them.", "",
            "```yaml", yaml.safe_dump(trained_with, sort_keys=False).rstrip(), "```", ""])

    def write(self, folder: Path) -> None:
        atomic_write_text(folder / "README.md", self.render())


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.4f}"
