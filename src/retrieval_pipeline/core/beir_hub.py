"""A BEIR collection on the hub, read into a Collection: the repositories' own BEIR files (BEIR's repositories ship
them beside a loading script that `datasets` no longer runs), else the datasets as `datasets` loads them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from retrieval_pipeline.core.beir_files import collection_from_files
from retrieval_pipeline.core.collection import Collection, collection_from_frames
from retrieval_pipeline.core.errors import DataError
from retrieval_pipeline.core.reading import read_hub
from retrieval_pipeline.core.sources import BeirHub, HubSource

HUB_FILES = {"corpus": ("corpus.jsonl", "corpus.jsonl.gz"), "queries": ("queries.jsonl", "queries.jsonl.gz")}


def hub_file(repo: str, revision: str | None, names: Sequence[str]) -> Path | None:
    """The first of `names` that the hub dataset repository holds at `revision`, from the Hugging Face cache or
    downloaded; None when it holds none of them (or cannot be reached)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    for name in names:
        try:
            return Path(hf_hub_download(repo, name, repo_type="dataset", revision=revision))
        except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError):
            continue
    return None


def read_beir_hub(corpus: HubSource, queries: HubSource, qrels: HubSource, splits: Mapping[str, str],
                  optional: Mapping[str, str] = {}) -> Collection:
    """A BEIR collection from the hub repositories' own files (corpus.jsonl[.gz], queries.jsonl[.gz] and a
    <split>.tsv per qrels split, those of `optional` where they exist), read like a BEIR folder: BEIR's repositories
    ship these files beside a loading script that `datasets` no longer runs. One missing: DataError (the caller may
    try `datasets`)."""
    found = {kind: hub_file(source.path, source.revision, HUB_FILES[kind])
             for kind, source in (("corpus", corpus), ("queries", queries))}
    judged = {split: hub_file(qrels.path, qrels.revision, (f"{name}.tsv", f"qrels/{name}.tsv"))
              for split, name in {**splits, **optional}.items()}
    missing = [f"{source.path}: {' or '.join(HUB_FILES[kind])}" for kind, source in
               (("corpus", corpus), ("queries", queries)) if found[kind] is None]
    missing += [f"{qrels.path}: {name}.tsv" for split, name in splits.items() if judged[split] is None]
    if missing:
        raise DataError(f"no BEIR files in the hub repositories ({'; '.join(missing)})")
    return collection_from_files(found["corpus"], found["queries"],
                                 {split: path for split, path in judged.items() if path is not None})


def read_hub_collection(hub: BeirHub, splits: Mapping[str, str], optional: Mapping[str, str] = {}) -> Collection:
    """A BEIR collection on the hub: the repositories' own BEIR files (BEIR's repositories hold them beside a
    loading script, which `datasets` no longer runs), else the datasets as `datasets` loads them (parquet, or the
    hub's parquet conversion when the revision names it), a qrels split of `optional` only where it loads; one error
    naming both attempts when neither works."""
    try:
        return read_beir_hub(hub.corpus, hub.queries, hub.qrels, splits, optional)
    except DataError as files_error:
        try:
            corpus, corpus_origin = read_hub(hub.corpus)
            queries, queries_origin = read_hub(hub.queries)
            loaded = {split: read_hub(hub.qrels.model_copy(update={"split": name})) for split, name in splits.items()}
        except DataError as datasets_error:
            raise DataError(f"{hub.corpus.path}: cannot read the BEIR collection: tried its files ({files_error}) and "
                            f"`datasets` ({datasets_error}); expected corpus.jsonl[.gz], queries.jsonl[.gz] and "
                            f"<split>.tsv qrels in the repositories, or datasets `datasets` can load (pin a revision "
                            "such as refs/convert/parquet in the hub sources' revision for the hub's parquet "
                            "conversion)") from datasets_error
    for split, name in optional.items():
        try:
            loaded[split] = read_hub(hub.qrels.model_copy(update={"split": name}))
        except DataError:
            continue  # the collection has no such split: the caller makes one (a share of train) where it needs it
    origins = {"corpus": corpus_origin, "queries": queries_origin,
               **{split: origin for split, (_, origin) in loaded.items()}}
    return collection_from_frames(corpus, queries, {split: frame for split, (frame, _) in loaded.items()}, origins)
