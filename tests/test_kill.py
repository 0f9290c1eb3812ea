"""A stage killed (SIGKILL) midway leaves its partial output and scratch behind, inside its output; the rerun
clears them, whether it runs the stage again or restores the outputs from DVC's run-cache, and gives the same bytes
as a run that was never interrupted. A train stage also leaves its resume state (.resume/, outside its outputs): a
rerun of the stage resumes from it and removes it, and where DVC restores the stage from its run-cache instead, the
next stage of ours that runs removes it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from helpers import TINY_MATRYOSHKA, copy_repo, kill_stage_when, run

pytestmark = pytest.mark.slow


def digest(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.md5(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


OUTPUTS = ("data", "models", "eval", "metrics", "scores", "dvclive")


def leftovers(repo: Path) -> list[str]:
    """Partial outputs, finished ones not yet moved in place, and scratch files, wherever they are."""
    found = [path for top in OUTPUTS for pattern in ("*.partial-*", "*.replacing-*", ".scratch")
             for path in (repo / top).rglob(pattern)]
    found += [path for path in (repo / ".scratch").rglob("*") if path.is_file()]
    return sorted(str(path.relative_to(repo)) for path in found)


def resume_states(repo: Path) -> list[str]:
    return sorted(str(path.relative_to(repo)) for path in (repo / ".resume").glob("*"))


def kill_when(repo: Path, stage: str, pattern: str) -> None:
    """Run `stage` of matryoshka and SIGKILL it as soon as a path matching `pattern` appears under the repo."""
    kill_stage_when(repo, stage, "matryoshka", lambda: any(repo.glob(pattern)), f"{pattern} appeared", timeout=600)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, dict[str, str]]:
    repo = copy_repo(tmp_path_factory.mktemp("uninterrupted"), TINY_MATRYOSHKA)
    run(["dvc", "repro", "train@matryoshka"], repo)
    return {"prepared": digest(repo / "data/matryoshka/prepared"), "model": digest(repo / "models/matryoshka")}


def test_killed_prepare_and_train_leave_no_orphan_after_a_rerun(tmp_path, reference):
    repo = copy_repo(tmp_path, TINY_MATRYOSHKA)
    run(["dvc", "repro", "resolve@matryoshka"], repo)  # the params file the stages read

    kill_when(repo, "prepare", "data/matryoshka/prepared/.partial-*")
    assert leftovers(repo)
    assert all(path.name.startswith(".partial-") for path in (repo / "data/matryoshka/prepared").iterdir())
    run(["dvc", "repro", "prepare@matryoshka"], repo)
    assert not leftovers(repo)
    assert digest(repo / "data/matryoshka/prepared") == reference["prepared"]

    run(["dvc", "repro", "base@matryoshka", "mine@matryoshka"], repo)  # every input of train, as under DVC
    # after training, while the model card scores the test split: the epoch checkpoint (in .resume/) and the partial
    # model exist
    kill_when(repo, "train", "models/matryoshka/.partial-*")
    left = leftovers(repo)
    assert any(path.startswith("models/matryoshka/.partial-") for path in left)
    assert resume_states(repo) == [".resume/train@matryoshka"]
    output = run(["dvc", "repro", "train@matryoshka"], repo)
    assert "resuming from epoch 1" in output  # the last: nothing left to train, only the best epoch to load
    assert not leftovers(repo) and not resume_states(repo)
    assert digest(repo / "models/matryoshka") == reference["model"]

    # Killed again, now that the run-cache holds this run: the rerun restores the outputs without running the
    # stage, and what the killed run left goes with the outputs DVC removes first.
    kill_when(repo, "train", "models/matryoshka/.partial-*")
    assert leftovers(repo)
    output = run(["dvc", "repro", "train@matryoshka"], repo)
    assert "Stage 'train@matryoshka' is cached - skipping run, checking out outputs" in output
    assert not leftovers(repo)
    assert digest(repo / "models/matryoshka") == reference["model"]
    # No code of ours ran, so the killed run's resume state is still there; the next stage of ours that runs
    # removes it, as nothing resumes from it once the stage's outputs are in place.
    assert resume_states(repo) == [".resume/train@matryoshka"]
    output = run(["dvc", "repro", "--force", "--single-item", "prepare@matryoshka"], repo)
    assert "removed .resume/train@matryoshka, the resume state of train@matryoshka" in output
    assert not resume_states(repo)
