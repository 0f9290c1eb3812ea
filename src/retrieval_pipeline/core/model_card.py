"""The model card (README.md) in every checkpoint directory: what the model is, its recipe, data and
profile, what it scored, how to load it, and the params it was trained with.

The scores are measured by the train stage itself, on the held-out test split with the evaluate
stage's own scoring code: DVC lets only the stage that writes a checkpoint write into it, and this is
how sentence-transformers fills a card from the evaluators its trainer ran. The card's front matter
carries them as a Hugging Face `model-index`, so the hub shows them if the model is pushed there.

A card goes wherever its model goes, so it names a local data folder or model by its name and a content hash,
never by a path on the machine that trained it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from retrieval_pipeline.core.io import atomic_write_text
from retrieval_pipeline.core.sources import PACKAGE_PREFIX, local_files, split_revision

METRIC_NAMES = {"ndcg": "NDCG", "mrr": "MRR", "map": "MAP", "recall": "Recall", "precision": "Precision",
                "accuracy": "Accuracy", "f1": "F1", "auc": "AUC", "vectors_per_document": "vectors per document",
                "bytes_per_vector": "bytes per vector"}
TRAINING_SECTIONS = ("seed", "model", "mine", "train")


def content_digest(path: Path) -> str:
    """sha256 of a file's bytes, or of a folder's files (each one's relative path and digest, in path order): the
    same content gives the same digest on any machine."""
    files = local_files(path)
    if path.is_file():
        return files[0]["sha256"]
    return hashlib.sha256("".join(f"{file['name']}\0{file['sha256']}\n" for file in files).encode()).hexdigest()


def _strings(tree: Any) -> Iterator[str]:
    if isinstance(tree, str):
        yield tree
    elif isinstance(tree, dict):
        for value in tree.values():
            yield from _strings(value)
    elif isinstance(tree, list | tuple):
        for value in tree:
            yield from _strings(value)


def portable_names(tree: Any, root: Path) -> dict[str, str]:
    """Each string in `tree` that names an existing file or folder outside `root` (the repository), mapped to its
    name and content digest: how a card names a user's local data or model."""
    names = {}
    for text in _strings(tree):
        path = Path(text)
        if text and path.exists() and not path.resolve().is_relative_to(root.resolve()):
            names[text] = f"{path.resolve().name} (sha256 {content_digest(path)[:16]})"
    return names


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

    def portable(self, root: Path) -> str:
        """The card with every local path outside `root` replaced by its name and content digest."""
        text = self.render()
        names = portable_names([self.base_model, self.params], root)
        for path in sorted(names, key=len, reverse=True):  # a folder before a path that starts like it
            text = text.replace(path, names[path])
        return text

    def write(self, folder: Path) -> None:
        """README.md in `folder`, with local paths outside the working directory (the repository a stage runs in)
        named portably."""
        atomic_write_text(folder / "README.md", self.portable(Path.cwd()))


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.4f}"
