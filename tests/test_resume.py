"""A train stage stopped after its first epoch (SIGKILL) and rerun with the same params and inputs resumes from that
epoch, for every family and every model it trains, and ends with the same weights and scores as a run that was never
stopped; its resume state is gone once the stage completes, and a change of params discards it (or, where it
cannot be deleted, stops the stage: another run's state is never resumed from)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from helpers import (
    TINY_COLBERT,
    TINY_DPR,
    TINY_MATRYOSHKA,
    TINY_RERANKER,
    attempt,
    copy_repo,
    deep_merge,
    kill_stage_when,
    run,
)

pytestmark = pytest.mark.slow

TWO_EPOCHS = {
    "matryoshka": deep_merge(TINY_MATRYOSHKA, {"matryoshka": {"embedded": {"train": {"epochs": 2}}}}),
    "dpr": deep_merge(TINY_DPR, {"dpr": {"embedded": {"train": {"epochs": 2}}}}),
    "reranker": deep_merge(TINY_RERANKER, {"reranker": {"embedded": {"train": {"stage2": {"epochs": 2}}}}}),
    "colbert": deep_merge(TINY_COLBERT, {"colbert": {"embedded": {"model": {"pretrain": {"epochs": 2}},
                                                                  "train": {"epochs": 2}}}}),
}
# Where each stage is stopped: once the first epoch's checkpoint of the named run is complete. For the reranker and
# colbert's train, that run is the second one the stage trains, so the first is carried over finished.
STOPS = {
    "matryoshka": [("train", "finetuned")],
    "dpr": [("train", "finetuned")],
    "reranker": [("train", "features_stage2")],
    "colbert": [("base", "base"), ("train", "pooling_aware")],
}
CARRIED_OVER = {("reranker", "train"), ("colbert", "train")}
OUTPUTS = {"train": ["models/{family}", "scores/{family}/trained"],
           "base": ["data/{family}/base/model", "data/{family}/base/base.json"]}
LOGS = {"train": "dvclive/{family}", "base": "data/{family}/base/training"}


def digest(repo: Path, outputs: list[str]) -> dict[str, str]:
    found = {}
    for output in outputs:
        top = repo / output
        for path in [top] if top.is_file() else sorted(top.rglob("*")):
            if path.is_file():
                found[str(path.relative_to(repo))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


TIMINGS = {"runtime.tsv", "samples_per_second.tsv", "steps_per_second.tsv"}


def logged(log: Path) -> dict[str, list[list[str]]]:
    """DVCLive's logged values (step and value of every metric), without timestamps and timings."""
    values = {}
    for table in sorted(path for path in log.rglob("*.tsv") if path.name not in TIMINGS):
        rows = [line.split("\t") for line in table.read_text(encoding="utf-8").splitlines()]
        keep = [index for index, name in enumerate(rows[0]) if name != "timestamp"]
        values[str(table.relative_to(log))] = [[row[index] for index in keep] for row in rows]
    return values


def complete_checkpoint(repo: Path, stage: str, family: str, run_name: str) -> bool:
    for state in repo.glob(f".resume/{stage}@{family}/{run_name}/checkpoint-*/trainer_state.json"):
        try:
            json.loads(state.read_text(encoding="utf-8"))
        except ValueError:
            continue
        return True
    return False


def stop_after_first_epoch(repo: Path, stage: str, family: str, run_name: str) -> None:
    kill_stage_when(repo, stage, family, lambda: complete_checkpoint(repo, stage, family, run_name),
                    f"{run_name}'s first checkpoint")


@pytest.mark.parametrize("family", list(STOPS))
def test_a_stopped_stage_resumes_and_ends_as_an_uninterrupted_run(tmp_path, family):
    repo = copy_repo(tmp_path, TWO_EPOCHS[family])
    run(["dvc", "repro", f"train@{family}"], repo)
    for stage, run_name in STOPS[family]:
        outputs = [output.format(family=family) for output in OUTPUTS[stage]]
        log = repo / LOGS[stage].format(family=family)
        reference, reference_log = digest(repo, outputs), logged(log)
        assert not (repo / ".resume").exists()

        stop_after_first_epoch(repo, stage, family, run_name)
        assert (repo / f".resume/{stage}@{family}").is_dir()
        output = run(["dvc", "repro", "--force", "--single-item", f"{stage}@{family}"], repo)
        assert "resuming from epoch 1" in output
        assert ("finished before the stop, kept" in output) == ((family, stage) in CARRIED_OVER)
        assert digest(repo, outputs) == reference
        assert logged(log) == reference_log
        assert not (repo / ".resume").exists()
        assert "output_dir: .resume/" in "".join(path.read_text() for path in log.rglob("params.yaml"))


def test_a_changed_param_discards_the_resume_state(tmp_path):
    repo = copy_repo(tmp_path, TWO_EPOCHS["matryoshka"])
    run(["dvc", "repro", "mine@matryoshka"], repo)
    stop_after_first_epoch(repo, "train", "matryoshka", "finetuned")
    params = repo / "params.yaml"
    params.write_text(params.read_text(encoding="utf-8").replace("learning_rate: 2.0e-5", "learning_rate: 3.0e-5", 1),
                      encoding="utf-8")
    output = run(["dvc", "repro", "train@matryoshka"], repo)
    assert "discarding the resume state of other params or inputs" in output
    assert "resuming" not in output
    assert not (repo / ".resume").exists()


def test_a_resume_state_that_cannot_be_discarded_stops_the_stage_and_is_never_resumed(tmp_path, small_mount):
    """The state of a run at another learning rate, its checkpoint on a read-only mount (so it can be neither
    deleted nor emptied): the rerun stops with one line naming the folder, rather than resuming from the other
    run's weights or dying in a half-deleted checkpoint."""
    repo = copy_repo(tmp_path, TWO_EPOCHS["matryoshka"])
    run(["dvc", "repro", "mine@matryoshka"], repo)
    stop_after_first_epoch(repo, "train", "matryoshka", "finetuned")
    checkpoint = next((repo / ".resume/train@matryoshka/finetuned").glob("checkpoint-*"))
    saved = tmp_path / "saved-checkpoint"
    checkpoint.rename(saved)
    small_mount(checkpoint, "size=512m")
    for path in saved.iterdir():
        (shutil.copytree if path.is_dir() else shutil.copy2)(path, checkpoint / path.name)
    small_mount(checkpoint, "ro")
    params = repo / "params.yaml"
    params.write_text(params.read_text(encoding="utf-8").replace("learning_rate: 2.0e-5", "learning_rate: 3.0e-5", 1),
                      encoding="utf-8")

    result = attempt(["dvc", "repro", "train@matryoshka"], repo)
    output = result.stdout + result.stderr
    state = repo / ".resume" / "train@matryoshka"
    assert result.returncode != 0, output
    assert f"error: {state}: cannot discard the resume state of other params or inputs (" in output, output
    assert "resuming" not in output and "Traceback" not in output, output
    assert not (repo / "models/matryoshka").exists()


def test_only_a_state_under_this_runs_key_is_resumed_from(tmp_path, monkeypatch):
    """Whatever a discard left in the state's folder, a checkpoint is taken only under this run's key."""
    from helpers import FamilyStages, write_params

    from retrieval_pipeline.core.resume import KEY_FILE, Resume

    write_params(tmp_path, TINY_MATRYOSHKA)
    monkeypatch.chdir(tmp_path)
    resume = Resume(FamilyStages("matryoshka", tmp_path).stage("train"), "train")  # no state yet: none discarded
    checkpoint = resume.folder / "finetuned" / "checkpoint-7"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text('{"epoch": 1.0}', encoding="utf-8")
    for key in ({"digest": "another run's"}, None, resume.key):
        (resume.folder / KEY_FILE).unlink(missing_ok=True)
        if key is not None:
            (resume.folder / KEY_FILE).write_text(json.dumps(key), encoding="utf-8")
        found = resume.checkpoint("finetuned")
        assert (found.resolve() if found else None) == (checkpoint if key is resume.key else None), key
