"""What a family loads from outside the repository, recorded by the resolve stage: each model and hub dataset with
the revision params.yaml asks for, the commit it resolves to and the files it holds, so that `dvc diff` shows when
an input changed. Hub inputs that params.yaml does not pin to a commit are named in a warning, one per input."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from pathlib import Path

from retrieval_pipeline.core.family import Requirement
from retrieval_pipeline.core.sources import PACKAGE_PREFIX, hub_reference, local_files, pinned, split_revision


def unpinned_warnings(requirements: Sequence[Requirement]) -> list[str]:
    """One line per hub model or dataset (and params key) whose revision is not a commit."""
    lines, seen = [], set()
    for requirement in requirements:
        repo, revision = _hub(requirement)
        if repo is not None and not pinned(revision) and (requirement.key, repo) not in seen:
            seen.add((requirement.key, repo))
            lines.append(f"{requirement.key}: {repo} is not pinned (revision {revision or 'main'}): a rerun may load "
                         "other files while DVC sees no change; set its revision to a commit (40 hex digits, "
                         f"`huggingface_hub.list_repo_refs('{repo}')` lists the branches' and pull requests' commits)")
    return lines


def _hub(requirement: Requirement) -> tuple[str | None, str | None]:
    """(repo, revision) of a hub input; (None, None) for a package, a local folder or a local dataset."""
    if requirement.kind == "model":
        return split_revision(requirement.model) if hub_reference(requirement.model) else (None, None)
    dataset = requirement.dataset
    return (None, None) if Path(dataset.path).exists() else (dataset.path, dataset.revision)


def record(requirements: Sequence[Requirement]) -> list[dict]:
    """Per input: its params key and where it comes from, the revision asked for, the commit it resolves to (from
    the Hugging Face caches, else the hub when online; null when neither answers) and its files."""
    return [_model(requirement) if requirement.kind == "model" else _dataset(requirement)
            for requirement in requirements]


def _model(requirement: Requirement) -> dict:
    reference = requirement.model
    entry: dict = {"key": requirement.key, "kind": "model"}
    if reference.startswith(PACKAGE_PREFIX):
        module = reference.removeprefix(PACKAGE_PREFIX)
        distribution = importlib.metadata.packages_distributions().get(module, [module])[0]
        return {**entry, "package": distribution, "version": importlib.metadata.version(distribution)}
    if not hub_reference(reference):
        folder = Path(reference)  # recorded by name only: no machine path
        if not folder.exists():  # the stage that loads it says what is wrong
            return {**entry, "folder": folder.name, "found": "no such folder"}
        return {**entry, "folder": folder.name, "files": local_files(folder)}
    repo, revision = split_revision(reference)
    return {**entry, "repo": repo, "revision": revision, **_hub_model(repo, revision)}


def _hub_model(repo: str, revision: str | None) -> dict:
    from huggingface_hub import HfApi, is_offline_mode

    from retrieval_pipeline.core.models import cached_snapshot

    snapshot = cached_snapshot(repo, revision)
    if snapshot is not None:
        files = sorted(path for path in snapshot.rglob("*") if path.is_file())
        return {"commit": snapshot.name, "found": "Hugging Face cache",
                "files": [{"name": path.relative_to(snapshot).as_posix(), "size": path.stat().st_size,
                           "blob": path.resolve().name} for path in files]}
    if is_offline_mode():
        return {"commit": None, "found": "not in the Hugging Face cache and the hub is offline"}
    try:
        info = HfApi().model_info(repo, revision=revision, files_metadata=True)
    except Exception as error:  # offline, missing, gated: recorded as such, the preflight and the stages say more
        return {"commit": None, "found": f"hub: {type(error).__name__}"}
    return {"commit": info.sha, "found": "hub",
            "files": [{"name": file.rfilename, "size": file.size, "blob": file.lfs.sha256 if file.lfs else file.blob_id}
                      for file in sorted(info.siblings or [], key=lambda file: file.rfilename)]}


def _dataset(requirement: Requirement) -> dict:
    hub = requirement.dataset
    entry = {"key": requirement.key, "kind": "dataset", "repo": hub.path, "name": hub.name, "split": hub.split,
             "revision": hub.revision}
    if Path(hub.path).exists():
        return {**entry, "repo": Path(hub.path).name, "files": local_files(Path(hub.path))}
    cached = _cached_dataset_hashes(hub.path, hub.name)
    if cached:
        return {**entry, "found": "datasets cache", "cached_revisions": cached}
    from huggingface_hub import HfApi, is_offline_mode

    if is_offline_mode():
        return {**entry, "commit": None, "found": "not in the datasets cache and the hub is offline"}
    try:
        info = HfApi().dataset_info(hub.path, revision=hub.revision)
    except Exception as error:
        return {**entry, "commit": None, "found": f"hub: {type(error).__name__}"}
    return {**entry, "commit": info.sha, "found": "hub"}


def cached_dataset_configs(repo: str) -> list[Path]:
    """The folders in which `datasets` cached configs of the hub dataset `repo` (`<config>[-<hash>]/<version>/...`),
    as load_dataset lays out its cache (the library has no API that lists it)."""
    from datasets import config
    from datasets.naming import camelcase_to_snakecase

    namespace, _, dataset = repo.rpartition("/")
    folder = Path(config.HF_DATASETS_CACHE) / "___".join(filter(None, [namespace, camelcase_to_snakecase(dataset)]))
    return sorted(path for path in folder.iterdir() if path.is_dir()) if folder.is_dir() else []


def _cached_dataset_hashes(repo: str, name: str | None) -> list[str]:
    """The revision hashes (a commit's first 16 hex digits) under which `datasets` cached this dataset's config."""
    configs = [path for path in cached_dataset_configs(repo) if path.name.split("-")[0] == (name or "default")]
    return sorted({hashed.name for path in configs for version in path.iterdir() if version.is_dir()
                   for hashed in version.iterdir() if hashed.is_dir()})
