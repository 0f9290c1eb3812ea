"""The report's figures: each family's headline metric by group, and, on a collection, every served model's quality
against the bytes its index stores per document. Drawn without a version stamp: same inputs, same bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl

from retrieval_pipeline.report.statistics import group_columns


class Point(Protocol):
    """A served model as the collection figure draws it."""

    family: str
    name: str
    bytes_per_document: float

    @property
    def quality(self) -> float: ...


def family_figure(per_query: pl.DataFrame, family: str, metric: str, path: Path) -> None:
    """The headline metric per model: a line over a numeric group (dim, pool factor), else bars per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = group_columns(per_query)
    numeric = [column for column in groups if per_query[column].dtype.is_integer()]
    means = per_query.group_by(["model", *groups], maintain_order=True).agg(pl.col(metric).mean())
    models = list(dict.fromkeys(means["model"]))
    colours = plt.get_cmap("tab10" if len(models) <= 10 else "tab20")
    figure, axis = plt.subplots(figsize=(9, 4))
    if numeric:
        # a colour per model, a line style per setting of the other columns (rows / chunks, pooling method)
        x, panels = numeric[0], [column for column in groups if column != numeric[0]]
        styles = {key: ("-", "--", ":", "-.")[index % 4] for index, key in enumerate(
            dict.fromkeys(means.select(panels).rows()))} if panels else {}
        for key, lines in means.group_by(["model", *panels], maintain_order=True):
            lines = lines.sort(x)
            axis.plot(lines[x].to_list(), lines[metric].to_list(), marker="o", label=" / ".join(map(str, key)),
                      color=colours(models.index(key[0])), linestyle=styles.get(tuple(key[1:]), "-"))
        axis.set_xlabel(x)
    else:
        labels = [" / ".join(map(str, key)) for key in means.select(groups).unique(maintain_order=True).rows()] \
            if groups else [""]
        width = 0.8 / len(models)
        for index, model in enumerate(models):
            values = means.filter(pl.col("model") == model)[metric].to_list()
            axis.bar(np.arange(len(values)) + index * width, values, width, label=model)
        axis.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels)
    axis.set_ylabel(metric)
    axis.set_title(f"{family}: {metric} on held-out queries")
    axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.tight_layout()
    figure.savefig(path, dpi=100, metadata={"Software": None})  # no version stamp: same inputs, same bytes
    plt.close(figure)


def point_labels(served: list[Point]) -> dict[tuple[float, float], str]:
    """One label per point of the figure: models at the same bytes per document and NDCG@10 (one base model serving
    two families, say) share a label naming each on a line of its own, rather than labels drawn over one another."""
    names: dict[tuple[float, float], list[str]] = {}
    for model in served:
        point = (model.bytes_per_document, round(model.quality, 4))
        names.setdefault(point, []).append(model.name)
    return {point: "\n".join(models) for point, models in names.items()}


def plot_quality_against_bytes(served: list[Point], path: Path) -> None:
    """NDCG@10 against bytes per document (log scale), one point per model and setting, a colour per family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 5))
    for index, family in enumerate(dict.fromkeys(model.family for model in served)):
        models = [model for model in served if model.family == family]
        axis.scatter([model.bytes_per_document for model in models],
                     [model.quality for model in models], color=f"C{index}", label=family)
    for (size, quality), label in point_labels(served).items():
        axis.annotate(label, (size, quality), fontsize=6, xytext=(3, 3), textcoords="offset points")
    axis.set_xscale("log")
    axis.set_xlabel("bytes per document in the index")
    axis.set_ylabel("ndcg@10")
    axis.set_title("Quality against index size, every family on one collection")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(figure)
