"""The seed profile's real loading paths on the hub twins (tests/twins.py): each review finding of the seed
profile has a test here that fails without its fix."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from helpers import FIXTURES, SEED_SIZES, FamilyStages, write_params

from retrieval_pipeline.core.errors import DataError, ModelError
from retrieval_pipeline.core.models import locate
from retrieval_pipeline.core.params import deep_merge
from retrieval_pipeline.core.preflight import main as run_preflight

DEBERTA = "microsoft/deberta-v3-base"


def seed_family(tmp_path, name, overrides=None):
    write_params(tmp_path, deep_merge(SEED_SIZES, overrides or {}))
    return FamilyStages(name, tmp_path)


# Safetensors only ------------------------------------------------------------------------------------------------


def test_a_hub_revision_with_only_pickle_weights_is_refused_with_the_revision_to_use(twin_cache):
    with pytest.raises(ModelError) as error:
        locate(DEBERTA, "reranker.model.base")
    message = str(error.value)
    assert message.startswith("reranker.model.base: microsoft/deberta-v3-base@main publishes only pickle weights")
    assert f"set reranker.model.base: {DEBERTA}@refs/pr/1" in message


def test_the_named_conversion_loads_deberta_with_its_sentencepiece_tokenizer(twin_cache, tmp_path):
    from retrieval_pipeline.families.reranker.features import special_tokens
    from retrieval_pipeline.families.reranker.train import base_cross_encoder

    features = seed_family(tmp_path, "reranker").params.mine.features
    model = base_cross_encoder(f"{DEBERTA}@refs/pr/1", 64, special_tokens(features), 0, "reranker.model.base",
                               "reranker.model.max_length")
    assert type(model.model).__name__ == "DebertaV2ForSequenceClassification"
    assert type(model.tokenizer).__name__ == "DebertaV2Tokenizer"  # built from spm.model: sentencepiece, protobuf
    assert model.tokenizer("[HOP:1]", add_special_tokens=False)["input_ids"] == \
        [model.tokenizer.convert_tokens_to_ids("[HOP:1]")]
    assert np.isfinite(model.predict([("who runs it?", "Sable runs it.")])).all()


def test_a_local_folder_with_only_pickle_weights_is_refused(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text("{}")
    (tmp_path / "old" / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelError, match=r"colbert.model.base: .*old holds only pickle weights"):
        locate(str(tmp_path / "old"), "colbert.model.base")


def test_a_hub_id_missing_from_the_cache_offline_names_the_key(twin_cache):
    with pytest.raises(ModelError, match=r"matryoshka.model.base: nobody/nothing@main is neither a local folder nor"):
        locate("nobody/nothing", "matryoshka.model.base")


# DPR: the base towers score by cosine -----------------------------------------------------------------------------


def test_dpr_base_towers_of_a_raw_encoder_are_normalised(twin_cache, tmp_path):
    from retrieval_pipeline.core.models import load_sentence_transformer

    texts = ["The wind farm opened in 2019.", "Sable Utilities runs it."]
    from retrieval_pipeline.families.dpr.towers import base_towers

    towers = base_towers(seed_family(tmp_path, "dpr").family)
    for route in ("query", "document"):
        norms = np.linalg.norm(towers[route].encode(texts), axis=1)
        assert norms == pytest.approx([1.0, 1.0], abs=1e-5)
    # ModernBERT-base is a masked LM: loaded as it is, it mean-pools without normalising (the bug's cause)
    raw = load_sentence_transformer("answerdotai/ModernBERT-base", "dpr.model.base")
    assert not np.allclose(np.linalg.norm(raw.encode(texts), axis=1), 1.0, atol=1e-3)


# ColBERT: the teacher's own input format, the recipe's mined set and NanoBEIR ---------------------------------------


def test_the_gemma_teacher_keeps_its_prompt_and_query_when_the_passage_is_long(twin_cache):
    from retrieval_pipeline.families.colbert.teachers import YesLogitTeacher

    prompt = "Given a query A and a passage B, determine whether the passage contains an answer."
    teacher = YesLogitTeacher("BAAI/bge-reranker-v2-gemma", prompt, max_length=40, batch_size=2,
                              key="colbert.mine.teacher.model")
    assert type(teacher.tokenizer).__name__ == "GemmaTokenizer" and teacher.tokenizer.padding_side == "left"
    assert teacher.tokenizer.convert_ids_to_tokens(teacher.yes) == "Yes"
    tokens = lambda text: teacher.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    long = " ".join(["Cystic echinococcosis is a zoonosis caused by the larval stage."] * 30)
    ids = teacher.input_ids("Is albendazole effective?", long)
    assert ids[0] == teacher.tokenizer.bos_token_id
    assert ids[1:1 + len(tokens("A: Is albendazole effective?"))] == tokens("A: Is albendazole effective?")
    assert ids[-len(tokens(prompt)):] == tokens(prompt)
    scores = teacher([("Is albendazole effective?", long), ("a", "b")])
    assert scores.shape == (2,) and np.isfinite(scores).all()


def test_colbert_reads_the_recipes_mined_set_as_its_training_script_does(twin_cache, tmp_path):
    """The published lists are sorted by the teacher's score with string labels, so a positive may be second or
    last: each is cut to its first n_ways (4 here) in that order, and one without its positive there is dropped."""
    family = seed_family(tmp_path, "colbert", {"colbert": {"data": {"nanobeir": []}}})
    family.prepare()
    family.mine()
    train = pl.read_parquet(family.paths.mined / "train.parquet")
    published = pl.read_parquet(FIXTURES / "hub/scifact-train-mined-reranker-scores/data/train-00000-of-00001.parquet")
    assert train["query_id"].to_list() == ["1", "3"]  # query 5's positive is fifth of five
    for row in train.iter_rows(named=True):
        source = published.filter(pl.col("query_id") == row["query_id"]).row(0, named=True)
        assert row["document_ids"] == source["document_ids"][:4] and row["labels"] == source["labels"][:4]
    assert train["labels"].to_list()[1][:2] == ["hard_negative", "positive"]  # not re-sorted, positive second
    report = json.loads((family.paths.mined / "mining_report.json").read_text())
    assert report["source"] == "hf:stefan-jo/scifact-train-mined-reranker-scores[train]"
    assert report["capped"] == 3 and report["dropped_without_positive"] == 1 and report["dropped_short"] == 0
    assert report["teacher_positive_mrr"] == 0.75  # first, then second


def test_a_mined_set_naming_an_unknown_document_names_the_row(twin_cache, tmp_path):
    rows = pl.read_parquet(FIXTURES / "hub/scifact-train-mined-reranker-scores/data/train-00000-of-00001.parquet")
    unknown = ["19238", "99999", "4983", "33370", "18670"]
    rows = rows.with_columns(pl.when(pl.col("query_id") == "3").then(pl.lit(unknown))
                             .otherwise(pl.col("document_ids")).alias("document_ids"))
    (tmp_path / "mined").mkdir()
    rows.write_parquet(tmp_path / "mined" / "train.parquet")
    family = seed_family(tmp_path / "run", "colbert", {"colbert": {
        "data": {"nanobeir": []}, "mine": {"hub": {"path": str(tmp_path / "mined"), "split": "train"}}}})
    family.prepare()
    with pytest.raises(DataError, match=r"row 2: document '99999' is not in the corpus"):
        family.mine()
    assert not family.paths.mined.exists()


def test_colbert_mines_again_with_the_recipes_miner_and_llm_teacher(twin_cache, tmp_path):
    # a random twin's "Yes" logits are all alike: only negatives scoring above the positive itself are dropped
    family = seed_family(tmp_path, "colbert", {"colbert": {"data": {"nanobeir": []}, "mine": {
        "source": "mine", "n_ways": 2, "negative_threshold_share": 1.0,
        "selection": {"positives": 1, "hard": 1, "medium": 0, "random": 0}}}})
    family.prepare()
    family.mine()
    report = json.loads((family.paths.mined / "mining_report.json").read_text())
    assert report["source"] == "mined" and report["training_queries"] + report["skipped_queries"] == 3
    assert report["training_queries"] >= 1 and report["documents"]["positive"] == report["training_queries"]
    assert 0 < report["teacher_positive_mrr"] <= 1 and 0 < report["miner_positive_mrr"] <= 1
    train = pl.read_parquet(family.paths.mined / "train.parquet")
    assert all(labels == ["positive", "hard_negative"] for labels in train["labels"].to_list())  # positive first


def test_nanobeir_collections_are_prepared_beside_the_test_split(twin_cache, tmp_path):
    family = seed_family(tmp_path, "colbert")
    family.prepare()
    from retrieval_pipeline.families.colbert.scoring import evaluation_sets

    sets = evaluation_sets(family.stage("baseline"))
    assert list(sets) == ["test", "NanoSciFact", "NanoFiQA2018", "NanoNFCorpus", "NanoSCIDOCS", "NanoTouche2020"]
    queries, corpus, qrels = sets["NanoSciFact"]
    assert corpus.height == 6 and queries.height == 3 and all(v == {d: 1} for v, d in
                                                                zip(qrels.values(), ["n1", "n3", "n6"]))


# The preflight ----------------------------------------------------------------------------------------------------


def test_preflight_lists_every_model_and_dataset_of_the_seed_profile(twin_cache, tmp_path, capsys, monkeypatch):
    params = write_params(tmp_path, SEED_SIZES)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text(
        "vars:\n  - families: {matryoshka: {}, dpr: {}, reranker: {}, colbert: {}}\nstages: {}\n")
    assert run_preflight(["--params", str(params)]) == 2  # deberta-v3-base's main has only pickle weights
    out = capsys.readouterr().out
    for reference in ("nomic-ai/modernbert-embed-base @main", "answerdotai/ModernBERT-base @main",
                      "sentence-transformers/all-MiniLM-L6-v2 @main", "dslim/bert-base-NER @main",
                      "mixedbread-ai/mxbai-edge-colbert-v0-32m @main", "AdamLucek/legal-rag-positives-synthetic",
                      "stefan-jo/scifact-train-mined-reranker-scores", "zeta-alpha-ai/NanoTouche2020/qrels"):
        assert reference in out
    assert "MISSING model   microsoft/deberta-v3-base @main" in out and "@refs/pr/1" in out
    assert "memory  train: nomic-ai/modernbert-embed-base" in out and "GiB" in out
    fixed = write_params(tmp_path, deep_merge(SEED_SIZES, {"reranker": {"model": {"base": f"{DEBERTA}@refs/pr/1"}}}))
    assert run_preflight(["--params", str(fixed)]) == 0
    assert "everything the DAG loads is available" in capsys.readouterr().out


def test_preflight_stops_on_a_model_that_is_nowhere(twin_cache, tmp_path, capsys, monkeypatch):
    params = write_params(tmp_path, {"matryoshka": {"embedded": {"model": {"base": "nobody/nothing"}}}})
    monkeypatch.chdir(tmp_path)
    assert run_preflight(["--params", str(params), "matryoshka"]) == 2
    out = capsys.readouterr().out
    assert "MISSING model   nobody/nothing @main (unpinned)  [matryoshka.embedded.model.base; mine, train, " \
        "evaluate]: not in the Hugging Face cache and the hub is offline" in out
    assert "preflight: 1 missing (the MISSING lines above; params keys matryoshka.embedded.model.base)" in out


# Pinned hub inputs ---------------------------------------------------------------------------------------------------


def test_a_pinned_input_loads_at_its_commit_is_recorded_and_the_unpinned_ones_warn(twin_cache, tmp_path, capsys):
    """A revision that is a commit pins a hub input: the resolve stage records the commit and files it resolves
    to (data/<family>/inputs.yaml), says nothing of it, and names every unpinned input in one warning each."""
    import yaml
    from twins import commit_of

    from retrieval_pipeline.families.colbert.model import base_colbert

    base, corpus = commit_of("mixedbread-ai/mxbai-edge-colbert-v0-32m"), commit_of("BeIR/scifact")
    family = seed_family(tmp_path, "colbert", {"colbert": {
        "model": {"base": {"revision": base}},
        "data": {"nanobeir": [], "hf_beir": {"corpus": {"revision": corpus}, "queries": {"revision": corpus}}}}})
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("WARNING")]
    assert not any("colbert.model.base" in line or "BeIR/scifact " in line for line in warnings)
    assert any("colbert.data.hf_beir.qrels: BeIR/scifact-qrels is not pinned (revision main)" in line
               for line in warnings)
    assert any("colbert.mine.hub: stefan-jo/scifact-train-mined-reranker-scores is not pinned" in line
               and "list_repo_refs" in line for line in warnings)
    inputs = {entry["key"]: entry for entry in yaml.safe_load(family.paths.resolved_inputs.read_text())}
    model = inputs["colbert.model.base"]
    assert model["revision"] == base and model["commit"] == base and model["found"] == "Hugging Face cache"
    assert {"model.safetensors", "config.json"} <= {file["name"] for file in model["files"]}
    assert family.params.model.base == f"mixedbread-ai/mxbai-edge-colbert-v0-32m@{base}"
    family.prepare()  # the corpus and queries at their pinned commit, from the hub cache
    assert base_colbert(family.stage("train"))[0].auto_model.config.hidden_size == 128


def test_a_revision_that_is_not_in_the_cache_offline_is_refused_naming_the_key(twin_cache, tmp_path):
    family = seed_family(tmp_path, "colbert", {"colbert": {"model": {"base": {"revision": "0" * 40}}}})
    from retrieval_pipeline.families.colbert.model import base_colbert

    with pytest.raises(ModelError, match=rf"colbert.model.base: mixedbread-ai/mxbai-edge-colbert-v0-32m@{'0' * 40} is "
                                         "neither a local folder nor in the Hugging Face cache"):
        base_colbert(family.stage("train"))
