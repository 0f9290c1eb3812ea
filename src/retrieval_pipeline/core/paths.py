"""Where each family's stages read and write (dvc.yaml names the same paths)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BASE_RECORD = "base.json"  # in the base stage's output: {"made_here": ...} and, where it made one, how


@dataclass(frozen=True)
class FamilyPaths:
    root: Path
    family: str
    # the running stage's first output (dvc.yaml), which holds its scratch; None outside a stage
    stage_output: Path | None = None

    @property
    def prepared(self) -> Path:
        return self.root / "data" / self.family / "prepared"

    @property
    def base(self) -> Path:
        """The base stage's output: the model fine-tuning starts from where the family makes one, and
        BASE_RECORD, which says what it is."""
        return self.root / "data" / self.family / "base"

    @property
    def mined(self) -> Path:
        return self.root / "data" / self.family / "mined"

    @property
    def model(self) -> Path:
        return self.root / "models" / self.family

    @property
    def evaluation(self) -> Path:
        return self.root / "eval" / self.family

    @property
    def baseline_scores(self) -> Path:
        return self.root / "scores" / self.family / "baseline"

    @property
    def trained_scores(self) -> Path:
        """The trained models' test scores, written by the train stage beside their model cards."""
        return self.root / "scores" / self.family / "trained"

    @property
    def training_log(self) -> Path:
        return self.root / "dvclive" / self.family

    @property
    def resolved_params(self) -> Path:
        return self.root / "data" / self.family / "params.yaml"

    @property
    def resolved_inputs(self) -> Path:
        """What the family loads from outside the repository, with revisions, commits and files."""
        return self.root / "data" / self.family / "inputs.yaml"

    @property
    def metrics(self) -> Path:
        return self.evaluation / "metrics.json"

    def plot(self, name: str) -> Path:
        return self.evaluation / f"{name}.csv"

    @property
    def published_metrics(self) -> Path:
        """Where the report stage copies the metrics, in git, so `dvc metrics diff` works without the cache."""
        return self.root / "metrics" / "families" / f"{self.family}.json"

    def published_training(self, run: str) -> Path:
        """A training run's last logged values (DVCLive's metrics.json), copied by the report stage."""
        return self.root / "metrics" / "training" / self.family / f"{run}.json"

    def published_curves(self, run: str) -> Path:
        """A training run's curves (DVCLive's plots/metrics), copied by the report stage: dvc.yaml's plots read
        them from git, so a clone that lacks the DVC outputs (a one-family experiment) still shows every plot."""
        return self.root / "metrics" / "curves" / self.family / run

    def published_plot(self, name: str) -> Path:
        return self.root / "metrics" / f"{self.family}_{name}.csv"

    @property
    def scratch_root(self) -> Path:
        """Where the running stage keeps working files (trainer checkpoints, indexes): inside its first output, so
        that whatever removes the output (DVC, before it reruns the stage or restores it from the run-cache)
        removes what a killed run left there too. The stage removes it when it ends; outside a stage (a test
        calling a family's functions), a folder of the family's under .scratch/."""
        if self.stage_output is not None:
            return self.stage_output / ".scratch"
        return self.root / ".scratch" / self.family

    def resume(self, stage: str) -> Path:
        """A stage's resume state (core/resume.py): outside its outputs, which DVC removes before it reruns the
        stage, so that a rerun after a stop finds it."""
        return self.root / ".resume" / f"{stage}@{self.family}"

    def scratch(self, purpose: str) -> Path:
        return self.scratch_root / purpose

