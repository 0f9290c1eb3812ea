"""What the report stage reads from params.yaml (`report`): per family, which models to compare, on which metrics,
and what the run must show. The resolve stage checks a family's entry against the models the family produces, so a
misspelt label stops the run at its first stage instead of showing as "not in this run" at its end."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PositiveInt, model_validator

from retrieval_pipeline.core.errors import ParamsError
from retrieval_pipeline.core.params import Section, Seed, nearest, read_params_file, validate_section


class Better(Section):
    """`candidate` beats `baseline` on `metric` in every row of their comparison (each group, e.g. each dim or
    pool factor, optionally only those matching `where`), with a paired-test p-value below `alpha`."""

    kind: Literal["better"]
    candidate: str
    baseline: str
    metric: str
    alpha: float = Field(gt=0, lt=1)
    where: dict[str, str | int] = {}

    def models(self) -> tuple[str, ...]:
        return (self.baseline, self.candidate)

    def describe(self) -> str:
        scope = "".join(f", {column} {value}" for column, value in self.where.items())
        return f"{self.candidate} beats {self.baseline} on {self.metric} in every row{scope} (p < {self.alpha})"


class Drop(Section):
    """`model`'s mean `metric` changes from `column` = `start` to `column` = `end` (e.g. pool factor 1 to 4) by a
    drop of at most `at_most`, or at least `at_least`, in every group matching `where`; with `fraction_of`, also
    by at most `fraction` of that model's drop in the same group (what a held-out set too small for an absolute
    bound can still resolve: one model's drop against another's)."""

    kind: Literal["drop"]
    model: str
    metric: str
    column: str
    start: int | str
    end: int | str
    at_most: float | None = None
    at_least: float | None = None
    fraction_of: str | None = None  # another model label
    fraction: float | None = Field(default=None, gt=0)
    where: dict[str, str | int] = {}

    @model_validator(mode="after")
    def _one_bound(self) -> Drop:
        if (self.at_most is None) == (self.at_least is None):
            raise ValueError("expected exactly one of at_most and at_least")
        if (self.fraction_of is None) != (self.fraction is None):
            raise ValueError("expected fraction_of and fraction together")
        if self.fraction_of == self.model:
            raise ValueError(f"fraction_of names the model itself ({self.model!r}); expected another model")
        return self

    def models(self) -> tuple[str, ...]:
        return (self.model,) if self.fraction_of is None else (self.model, self.fraction_of)

    def describe(self) -> str:
        bound = f"at most {self.at_most:.3f}" if self.at_most is not None else f"at least {self.at_least:.3f}"
        if self.fraction_of is not None:
            bound += f" and at most {self.fraction:g} x {self.fraction_of}'s drop"
        scope = "".join(f", {column} {value}" for column, value in self.where.items())
        return f"{self.model}: {self.metric} drops by {bound} from {self.column} {self.start} to {self.end}{scope}"


class Published(Section):
    """A number the recipe's seed publishes, and this run's beside it, computed the way the seed's authors computed
    theirs: `model`'s mean `metric` over the held-out queries in the rows matching `where`; or, with `evaluation`, a
    number of the family's evaluation (metrics.json) at that dotted path (a classification F1, not a mean over
    queries); or, with `summary`, the last value a training run logged. Judged within `tolerance` of `value`.
    `beside`, where the project computes the same quantity its own way, says how (`where` with these columns
    changed, or another dotted path): that number is shown next to it, not judged."""

    kind: Literal["published"]
    metric: str
    value: float
    tolerance: float = Field(gt=0)
    source: str  # where the seed publishes the number
    model: str | None = None  # a model label, for a held-out metric
    where: dict[str, str | int] = {}
    evaluation: str | None = None  # a dotted path in eval/<family>/metrics.json, e.g. features.stage1.multihop
    summary: str | None = None  # a training run's summary (metrics/training/<family>/<summary>.json), instead
    beside: dict[str, str | int] | str | None = None

    @model_validator(mode="after")
    def _one_place(self) -> Published:
        if sum(place is not None for place in (self.model, self.evaluation, self.summary)) != 1:
            raise ValueError("expected exactly one of model (a held-out metric), evaluation (a path in the "
                             "family's metrics) and summary (a training run's log)")
        if self.beside is not None and self.summary is not None:
            raise ValueError("beside: expected it with model (columns of where to change) or evaluation (another "
                             "path), not with summary")
        if self.beside is not None and isinstance(self.beside, str) != (self.evaluation is not None):
            raise ValueError("beside: expected columns of where to change with model, a dotted path with "
                             "evaluation")
        return self

    def models(self) -> tuple[str, ...]:
        return (self.model,) if self.model else ()

    def describe(self) -> str:
        scope = "".join(f", {column} {value}" for column, value in self.where.items())
        what = (f"{self.model} {self.metric}{scope}" if self.model else
                f"{self.evaluation}: {self.metric}" if self.evaluation else
                f"training run {self.summary}: {self.metric}")
        return f"{what} as published: {self.value:g} ± {self.tolerance:g} ({self.source})"


class NotComparable(Section):
    """A number the seed publishes that this run cannot be judged by, and why (another split, another population)."""

    kind: Literal["not_comparable"]
    seed: str  # the number, as the seed states it
    why: str

    def models(self) -> tuple[str, ...]:
        return ()

    def describe(self) -> str:
        return f"seed: {self.seed}"


Expectation = Annotated[Better | Drop | Published | NotComparable, Field(discriminator="kind")]


class FamilyReport(Section):
    metrics: list[str] = Field(min_length=1)  # per-query metric columns; the first is plotted
    compare: list[tuple[str, str]] = Field(min_length=1)  # (baseline, candidate) model labels
    # what a run of each profile must show, judged in the report: the embedded profile by what the recipe claims
    # at its scale, the seed profile by the seed's own published numbers
    expect: dict[Literal["embedded", "seed"], list[Expectation]] = {}
    notes: str = ""  # what to read in the family's section, shown under its heading


class Choice(Section):
    """What the collection section recommends from its table: the cheapest row the paired test cannot tell from
    the best at `alpha`, and the best row whose index fits `bytes_per_document`."""

    alpha: float = Field(gt=0, lt=1)
    bytes_per_document: float = Field(gt=0)


class ReportParams(Section):
    families: dict[str, FamilyReport] = Field(min_length=1)
    permutations: PositiveInt  # resamples of the paired randomization test
    seed: Seed
    choice: Choice


def load_report_params(path: Path) -> ReportParams:
    section = read_params_file(path).get("report")
    if not isinstance(section, dict):
        raise ParamsError(f"{path}: no 'report' section; expected report.families, report.permutations, report.seed")
    return validate_section(section, ReportParams, path, "report")


def check_report_entry(document: dict[str, Any], path: Path, family: str, labels: Sequence[str]) -> None:
    """`report.families.<family>` of params.yaml, if present, names only models the family produces."""
    report = document.get("report")
    entry = report.get("families", {}).get(family) if isinstance(report, dict) and \
        isinstance(report.get("families"), dict) else None
    if entry is None:
        return  # the report stage names a missing entry
    settings = validate_section(entry, FamilyReport, path, f"report.families.{family}")
    named = [(f"compare[{index}]", label) for index, pair in enumerate(settings.compare) for label in pair]
    named += [(f"expect.{profile}[{index}]", label) for profile, expectations in settings.expect.items()
              for index, expectation in enumerate(expectations) for label in expectation.models()]
    for where, label in named:
        if label not in labels:
            raise ParamsError(f"{path}: report.families.{family}.{where}: {label!r} is not a model {family} "
                              f"produces; expected one of {', '.join(labels)}")


def report_entries(params: ReportParams, families: list[str], params_file: Path) -> dict[str, FamilyReport]:
    """Each family of the DAG with its report.families entry, in the DAG's order; a family without one, or an
    entry for no family, is an error rather than a family silently missing from the report."""
    missing = [family for family in families if family not in params.families]
    if missing:
        raise ParamsError(f"{params_file}: report.families has no entry for {', '.join(missing)} (a family of "
                          "dvc.yaml's vars.families); expected its metrics and compare list")
    unknown = sorted(set(params.families) - set(families))
    if unknown:
        raise ParamsError(f"{params_file}: report.families.{unknown[0]}: not a family of dvc.yaml's vars.families; "
                          f"{nearest(unknown[0], families)}")
    return {family: params.families[family] for family in families}
