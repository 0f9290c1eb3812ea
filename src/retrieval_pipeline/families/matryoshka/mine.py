"""Matryoshka's mine stage: hard negatives for the training pairs, mined with the base model by
sentence-transformers' mine_hard_negatives (the recipe's relative margin against false negatives)."""

from __future__ import annotations

from retrieval_pipeline.core.collection import load_collection
from retrieval_pipeline.core.io import atomic_directory
from retrieval_pipeline.families.matryoshka import Matryoshka
from retrieval_pipeline.families.matryoshka.model import load_model


def mine(family: Matryoshka) -> None:
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    params = family.params.mine
    model = load_model(family, family.params.model.base, "the base model")
    train = load_collection(family.paths.prepared).pairs("train")
    corpus = sorted(set(train["document"].to_list()))
    mined = mine_hard_negatives(
        Dataset.from_polars(train.select(anchor="query", positive="document")), model, anchor_column_name="anchor",
        positive_column_name="positive", corpus=corpus, range_max=params.range_max,
        relative_margin=params.relative_margin, num_negatives=params.num_negatives, sampling_strategy="top",
        output_format="n-tuple", output_scores=True, batch_size=params.batch_size, use_faiss=True,
        verbose=False)  # its table of score statistics is detail; the line below is what the log needs
    with atomic_directory(family.paths.mined) as out:
        mined.to_polars().write_parquet(out / "hard_negatives.parquet")
    dropped = train.height - len(mined)
    why = (f"; the other {dropped} had fewer than {params.num_negatives} candidates among the top "
           f"{params.range_max} scoring at most {1 - params.relative_margin:.0%} of the positive "
           f"({family.key('mine')}: range_max, relative_margin)") if dropped else ""
    print(f"mine: {len(mined)} of {train.height} training pairs kept hard negatives{why}")
