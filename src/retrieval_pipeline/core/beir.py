"""A family's data source that is a BEIR collection, a folder (core/beir_files.py) or a dataset on the hub
(core/beir_hub.py), read by one function into the Collection every prepare stage writes (core/collection.py)."""

from __future__ import annotations

from retrieval_pipeline.core.beir_files import read_beir_folder
from retrieval_pipeline.core.beir_hub import read_hub_collection
from retrieval_pipeline.core.collection import Collection
from retrieval_pipeline.core.sources import SourceParams


def read_beir_source(source: SourceParams, dev: bool) -> tuple[Collection, str]:
    """A family's data source that is a BEIR collection (a folder, or a dataset on the hub), with its train and test
    qrels and, with `dev`, its dev qrels where it has them; and where it came from, for messages."""
    names = source.local.splits if source.source == "local" else source.hf_beir.splits
    splits, optional = {"train": names.train, "test": names.test}, {"dev": names.dev} if dev else {}
    if source.source == "local":
        return read_beir_folder(source.local.path, splits, optional), f"BEIR folder {source.local.path}"
    return read_hub_collection(source.hf_beir, splits, optional), source.hf_beir.describe()
