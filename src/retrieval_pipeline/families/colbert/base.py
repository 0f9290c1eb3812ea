"""ColBERT's base stage: the ColBERT the recipe fine-tunes.

The recipe starts from a trained ColBERT (the seed's mxbai-edge-colbert) and claims that pooling-aware fine-tuning
keeps it good when its documents are pooled. A sentence embedder with a new projection (the embedded profile's
MiniLM) is no ColBERT, so with `model.pretrain` set this stage first makes one: model.base trained as a ColBERT
without pooling, with pylate's Contrastive loss (each claim against its abstract, another abstract of the same
entity and the batch's other abstracts), on a synthetic world of its own. A claim is left out when it or its
abstract names an entity the collection names, so the base has seen none of the collection's entities, documents
or queries.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path

from retrieval_pipeline.core.collection import load_collection
from retrieval_pipeline.core.io import atomic_directory, atomic_write_json
from retrieval_pipeline.core.paths import BASE_RECORD
from retrieval_pipeline.core.resume import ResumableTrainer, Resume
from retrieval_pipeline.core.stage import record_model_base_as_is
from retrieval_pipeline.core.training import shared_arguments
from retrieval_pipeline.core.world import build_world
from retrieval_pipeline.families.colbert import Colbert
from retrieval_pipeline.families.colbert.model import BASE_MODEL_FOLDER, colbert_of_model_base
from retrieval_pipeline.families.colbert.params import BasePretraining
from retrieval_pipeline.families.colbert.synthetic import abstracts, claim_collection


def pretraining_examples(pretrain: BasePretraining, collection_texts: Iterable[str]
                         ) -> tuple[dict[str, list[str]], int]:
    """(query, positive, negative) columns from the pretraining world, and how many of its claims were left out:
    those whose claim or abstract names an entity (by its name or an alias) that the collection's text names too.
    Another seed draws other entities, but from the same pools of names, so a few would otherwise be shared."""
    world = build_world(pretrain.world_seed, pretrain.facilities, pretrain.companies)
    corpus, queries, qrels = claim_collection(world, pretrain.claims_per_abstract, pretrain.world_seed,
                                              chunks_per_abstract=1)
    collection = "\n".join(collection_texts)
    shared = [name for entity in world.entities.values() for name in {entity.name, *entity.aliases}
              if name in collection]

    def unseen(text: str) -> bool:
        return not any(name in text for name in shared)

    entity_of = {document["_id"]: chunks[0].document_id for document, chunks in zip(corpus, abstracts(world, 1))}
    text_of = {document["_id"]: document["text"] for document in corpus if unseen(document["text"])}
    by_entity: dict[str, list[str]] = {}
    for document_id in text_of:
        by_entity.setdefault(entity_of[document_id], []).append(document_id)
    claim_of = {query["_id"]: query["text"] for query in queries}
    rng = random.Random(pretrain.world_seed)
    columns: dict[str, list[str]] = {"query": [], "positive": [], "negative": []}
    left_out = 0
    for judgement in qrels:
        claim, positive = claim_of[judgement["query-id"]], judgement["corpus-id"]
        if positive not in text_of or not unseen(claim):
            left_out += 1
            continue
        siblings = [document for document in by_entity[entity_of[positive]] if document != positive]
        negative = rng.choice(siblings or [document for document in text_of if document != positive])
        columns["query"].append(claim)
        columns["positive"].append(text_of[positive])
        columns["negative"].append(text_of[negative])
    return columns, left_out


def base(family: Colbert) -> None:
    pretrain = family.params.model.pretrain
    if pretrain is None:  # model.base is a ColBERT already
        record_model_base_as_is(family)
        return
    with atomic_directory(family.paths.base) as out:
        atomic_write_json(out / BASE_RECORD, pretrain_base(family, pretrain, out))


def pretrain_base(family: Colbert, pretrain: BasePretraining, out: Path) -> dict:
    from datasets import Dataset
    from pylate.losses import Contrastive
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.training_args import BatchSamplers

    from retrieval_pipeline.families.colbert.collator import TrimmedColBERTCollator

    resume = Resume(family, "base")
    collection = load_collection(family.paths.prepared)
    columns, left_out = pretraining_examples(pretrain, [*collection.corpus["text"], *collection.queries["text"]])
    model = colbert_of_model_base(family)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(resume.output_dir("base")), num_train_epochs=pretrain.epochs,
        per_device_train_batch_size=pretrain.batch_size, learning_rate=pretrain.learning_rate,
        save_strategy="epoch", save_total_limit=1,  # to resume from
        logging_steps=1,  # a short run: every step
        # two claims of one abstract in a batch would each be the other's false negative
        batch_sampler=BatchSamplers.NO_DUPLICATES, **shared_arguments(family.params.seed, True, pretrain.warmup_ratio))
    trainer = ResumableTrainer(model=model, args=args, train_dataset=Dataset.from_dict(columns),
                               loss=Contrastive(model),
                               data_collator=TrimmedColBERTCollator(tokenize_fn=model.tokenize))
    print(f"base: training {family.params.model.base} as a ColBERT without pooling on {len(columns['query'])} "
          f"claims of its own world ({left_out} left out: they name what the collection names)")
    result = resume.train(trainer, "base", out / "training", "base")
    model.save_pretrained(str(out / BASE_MODEL_FOLDER), create_model_card=False)
    resume.close()
    return {"made_here": True, "from": family.params.model.base, "claims": len(columns["query"]),
            "left_out": left_out, "steps": result.global_step, "loss": result.training_loss}
