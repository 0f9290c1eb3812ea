"""Building params files for tests from the repository's own params.yaml."""

from __future__ import annotations

import copy
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from retrieval_pipeline.core.params import deep_merge

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def repo_params() -> dict[str, Any]:
    return yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))


def write_params(directory: Path, overrides: dict[str, Any] | None = None) -> Path:
    """The repository's params with `overrides` merged in, written to directory/params.yaml, beside a copy of
    dvc.yaml (which says what params sections each stage may read)."""
    params = deep_merge(copy.deepcopy(repo_params()), overrides or {})
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    if not (directory / "dvc.yaml").exists():
        shutil.copy2(REPO / "dvc.yaml", directory / "dvc.yaml")
    return path


class FamilyStages:
    """A family in a test folder whose stages run as DVC runs them: its params resolved first (from `params`,
    default root/params.yaml), then each stage with only the params sections dvc.yaml declares for it.
    `family.prepare()` runs the prepare stage; `params` and `paths` are the whole family's."""

    def __init__(self, name: str, root: Path, params: Path | None = None) -> None:
        from retrieval_pipeline.core.resolve import load_family, write_resolved_params

        params = params or root / "params.yaml"
        self.name, self.root, self.family = name, root, load_family(name, params, root)
        write_resolved_params(self.family, params)
        self.params, self.paths = self.family.params, self.family.paths

    def stage(self, stage: str):
        """The family as `stage` sees it."""
        from retrieval_pipeline.core.stage import load_stage_family

        return load_stage_family(self.name, stage, self.root)

    def run(self, stage: str) -> None:
        from retrieval_pipeline.core.stage import run_family_stage

        run_family_stage(self.stage(stage), stage)

    def __getattr__(self, stage: str):
        from retrieval_pipeline.core.family import STAGES

        if stage not in STAGES:
            raise AttributeError(stage)
        return lambda: self.run(stage)


def run_stages(family: str, stages: list[str], root: Path, params: Path | None = None) -> FamilyStages:
    """Resolve the family's params and run `stages` in `root`."""
    runner = FamilyStages(family, root, params)
    for stage in stages:
        runner.run(stage)
    return runner


TINY_MATRYOSHKA = {
    "matryoshka": {
        "embedded": {
            "data": {"synthetic": {"facilities": 4, "companies": 2, "questions_per_chunk": 2}},
            "model": {"dims": [384, 128, 32]},
            "train": {"epochs": 1, "batch_size": 8, "logging_steps": 1},
            "evaluate": {"batch_size": 32},
        }
    }
}

TINY_DPR = {
    "dpr": {
        "embedded": {
            "data": {"synthetic": {"facilities": 4, "companies": 2}},
            "train": {"epochs": 1, "batch_size": 8, "logging_steps": 1},
        }
    }
}

TINY_RERANKER = {
    "reranker": {
        "embedded": {
            "data": {"multihop": {"synthetic": {"facilities": 4, "companies": 2}},
                     "factual": {"synthetic": {"facilities": 4, "companies": 2}},
                     "test_size": 0.25},
            "mine": {"candidates": 20, "negatives": {"hard_per_positive": 2, "easy_per_positive": 1}},
            "train": {"stage1": {"epochs": 1}, "stage2": {"epochs": 1}, "stage2_replay": {"epochs": 1},
                      "batch_size": 8, "logging_steps": 1},
        }
    }
}

TINY_COLBERT = {
    "colbert": {
        "embedded": {
            "data": {"synthetic": {"facilities": 4, "companies": 2, "test_size": 0.25}},
            "model": {"query_length": 24, "document_length": 64,
                      "pretrain": {"facilities": 4, "companies": 2, "claims_per_abstract": 1, "batch_size": 8}},
            "mine": {"candidates": 16, "n_ways": 4, "teacher": {"fine_tune": {"epochs": 1}}},
            "train": {"epochs": 1, "batch_size": 4, "logging_steps": 1},
            "evaluate": {"pool_factors": [1, 2, 4]},
        }
    }
}


# The seed profile as published, with only sizes made small enough for a CPU (epochs, batches, lengths, list
# sizes). The hub fixtures are a few rows each, so the data is small already.
SEED_SIZES = {
    "profile": "seed",
    "matryoshka": {"model": {"max_seq_length": 64},
                   "train": {"epochs": 1, "batch_size": 4, "gradient_accumulation_steps": 1, "logging_steps": 1},
                   "evaluate": {"batch_size": 8}},
    "dpr": {"model": {"max_seq_length": 64}, "train": {"epochs": 1, "batch_size": 4, "logging_steps": 1}},
    "reranker": {"model": {"max_length": 64}, "mine": {"candidates": 20, "batch_size": 8},
                 "train": {"stage1": {"epochs": 1}, "stage2": {"epochs": 1}, "batch_size": 4, "logging_steps": 1,
                           "gradient_accumulation_steps": 1, "evaluation": {"share": 0.3, "steps": 2}},
                 "evaluate": {"batch_size": 8}},
    "colbert": {"model": {"query_length": 16, "document_length": 64},
                "mine": {"candidates": 6, "n_ways": 4, "batch_size": 8, "teacher": {"max_length": 64, "batch_size": 4}},
                "train": {"epochs": 1, "batch_size": 2, "logging_steps": 1}, "evaluate": {"batch_size": 8}},
}
# A seed run on the hub twins: offline, transformers cannot reach the safetensors conversion of deberta-v3-base
# (its main has only pytorch_model.bin), so the revision is named, as the loading error tells a user to.
SEED_RUN = deep_merge(SEED_SIZES, {"reranker": {"model": {"base": "microsoft/deberta-v3-base@refs/pr/1"}}})


def attempt(command: list[str], cwd: Path, **environment: str) -> subprocess.CompletedProcess:
    """Run a command with this venv first on PATH, whatever its exit code."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **environment}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)


def run(command: list[str], cwd: Path, **environment: str) -> str:
    """Run a command with this venv first on PATH; fail the test with its output's tail unless it succeeds."""
    result = attempt(command, cwd, **environment)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def commit(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qm", message], repo)


def copy_repo(target: Path, params: dict[str, Any]) -> Path:
    """The repository's tracked and untracked-not-ignored files, without results, as a fresh git repo with
    `params` merged into params.yaml."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file() and not name.startswith(("metrics/", "dvclive/")) and name != "dvc.lock":
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)
    write_params(target, params)
    run(["git", "init", "-q"], target)
    commit(target, "params for the test")
    return target


def write_beir_collection(folder: Path, dev: bool = False) -> Path:
    """A small BEIR folder in the formats real downloads come in: a gzipped corpus with titles and extra metadata
    fields, CRLF qrels with graded relevance (2, 1, and 0 for judged not relevant), a query with two relevant
    documents, and (with `dev`) a dev split. Written by the tests, not copied from a dataset."""
    from retrieval_pipeline.core.world import build_world
    from retrieval_pipeline.families.colbert.synthetic import claim_collection

    corpus, queries, qrels = claim_collection(build_world(3, facilities=6, companies=2), 2, 3, chunks_per_abstract=3)
    judged = [(row["query-id"], row["corpus-id"], 2) for row in qrels]
    ids = [row["_id"] for row in corpus]
    # a test query and a training query each also find a second, less relevant document and one judged not relevant
    for query, document, _ in (judged[0], judged[2]):
        judged += [(query, next(i for i in ids if i != document), 1), (query, ids[-1], 0)]
    splits = {"test": [], "train": [], "dev": []}
    for row in sorted(judged):
        number = int(row[0].removeprefix("claim"))
        splits["test" if number % 4 == 0 else "dev" if dev and number % 4 == 1 else "train"].append(row)
    return write_beir_files(folder, [{**row, "metadata": {"source": "synthetic register"}} for row in corpus],
                            [{**row, "metadata": {}} for row in queries], splits)


def write_beir_files(folder: Path, corpus: list[dict], queries: list[dict],
                     qrels: dict[str, list[tuple[str, str, int]]]) -> Path:
    """A BEIR folder as downloads come: corpus.jsonl.gz, queries.jsonl and qrels/<split>.tsv (a header row, CRLF
    line ends) for every split that has judgements."""
    import gzip
    import json

    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / "corpus.jsonl.gz", "wt", encoding="utf-8") as out:
        out.writelines(json.dumps(row) + "\n" for row in corpus)
    (folder / "queries.jsonl").write_text("".join(json.dumps(row) + "\n" for row in queries), encoding="utf-8")
    for split, rows in qrels.items():
        if rows:
            (folder / "qrels" / f"{split}.tsv").write_bytes(
                ("query-id\tcorpus-id\tscore\r\n" + "".join(f"{q}\t{d}\t{s}\r\n" for q, d, s in rows)).encode())
    return folder


def kill_stage_when(repo: Path, stage: str, family: str, reached: Callable[[], bool], what: str,
                    timeout: float = 900) -> None:
    """Run `stage` of `family` in `repo` and SIGKILL it as soon as `reached()` holds (`what` names the moment)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    process = subprocess.Popen([sys.executable, f"stages/{stage}.py", family], cwd=repo, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while not reached():
            assert process.poll() is None, f"{stage}@{family} finished before {what}"
            assert time.monotonic() < deadline, f"no {what} within {timeout} s"
            time.sleep(0.002)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


def split_features(batch: dict, columns: tuple[str, ...]) -> list[dict]:
    """A collated ColBERT batch as the per-column features pylate's losses take, in `columns` order."""
    return [{key.removeprefix(f"{name}_"): value for key, value in batch.items() if key.startswith(f"{name}_")}
            for name in columns]
