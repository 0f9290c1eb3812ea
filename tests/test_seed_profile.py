"""The seed profile end to end, offline: `dvc repro` of every family with `profile: seed`, on tiny twins of the
real hub models and datasets served from a Hugging Face cache (tests/twins.py). Only sizes are overridden
(helpers.SEED_SIZES); the loading code is the code a user runs against the hub."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO, SEED_RUN, copy_repo, run

from retrieval_pipeline.core.dag import dag_families
from retrieval_pipeline.core.family import STAGES

pytestmark = pytest.mark.slow
FAMILIES = dag_families(REPO)


@pytest.fixture(scope="module")
def seed_repo(tmp_path_factory, hub_twins) -> tuple[Path, str]:
    repo = copy_repo(tmp_path_factory.mktemp("seed-repo"), SEED_RUN)
    output = run(["dvc", "repro"], repo, **hub_twins)
    return repo, output


def test_every_stage_of_every_family_runs_and_writes_its_outputs(seed_repo):
    repo, output = seed_repo
    for family in FAMILIES:
        for stage in STAGES:
            assert f"Running stage '{stage}@{family}'" in output, f"{stage}@{family} did not run"
        for folder in (f"data/{family}/prepared", f"data/{family}/mined", f"models/{family}", f"eval/{family}"):
            assert any((repo / folder).rglob("*.parquet")) or any((repo / folder).rglob("*.safetensors")), folder
        assert json.loads((repo / f"metrics/families/{family}.json").read_text())
    report = (repo / "metrics/report.md").read_text()
    assert "Profile `seed`" in report
    for family in FAMILIES:
        assert f"## {family}" in report and (repo / f"metrics/report/{family}.png").read_bytes()[:4] == b"\x89PNG"


def test_the_recipes_models_and_sizes_are_the_ones_that_ran(seed_repo):
    repo, _ = seed_repo
    matryoshka = json.loads((repo / "metrics/families/matryoshka.json").read_text())
    assert set(matryoshka["finetuned"]) == {"rows", "chunks"}
    assert set(matryoshka["finetuned"]["rows"]) == {f"dim_{dim}" for dim in (768, 512, 256, 128, 64)}
    card = (repo / "models/matryoshka/README.md").read_text()
    assert "Base model: `nomic-ai/modernbert-embed-base`" in card and "Profile: `seed`" in card
    config = json.loads((repo / "models/reranker/plain/stage1/config.json").read_text())
    assert config["model_type"] == "deberta-v2"
    colbert = json.loads((repo / "metrics/families/colbert.json").read_text())
    assert colbert["mining"]["source"] == "hf:stefan-jo/scifact-train-mined-reranker-scores[train]"
    assert set(colbert["nanobeir"]) == {"NanoSciFact", "NanoFiQA2018", "NanoNFCorpus", "NanoSCIDOCS", "NanoTouche2020"}
    for by_model in colbert["nanobeir"].values():
        assert set(by_model) == {"base", "without_pooling", "pooling_aware"}
        # documents cut to the recipe's evaluation length (180) and to the model's; three poolings each
        assert set(by_model["pooling_aware"]) == {"length_180", "length_300"}
        assert set(by_model["pooling_aware"]["length_180"]) == {"kmeans", "kmeans_lloyd", "hierarchical"}
        assert set(by_model["pooling_aware"]["length_180"]["kmeans"]) == {"pf_1", "pf_2", "pf_4", "pf_6"}
    # its collection is a BEIR dataset on the hub (SciFact), so its evaluate stage measured serving it
    # (BM25 and the hybrid beside them: docs/comparisons.md)
    assert set(colbert["serving"]) == {"base", "pooling_aware", "bm25", "hybrid"}
    for model in ("pooling_aware", "hybrid"):  # one per factor
        assert len(colbert["serving"][model]) == len(colbert["pooling_aware"]["kmeans"])
    # the reranker's F1 and AUC as the recipe measures them too: over the training pairs held out pair by pair
    reranker = json.loads((repo / "metrics/families/reranker.json").read_text())
    for stage, dataset in (("stage1", "multihop"), ("stage2", "factual")):
        held_out = reranker["features"][stage][dataset]["held_out_examples"]
        assert 0 <= held_out["f1"] <= 1 and held_out["pairs"] > 0
        assert reranker["features"][stage][dataset]["threshold"] == 0.5


def test_each_published_number_has_this_runs_number_computed_the_authors_way_and_the_projects_beside(seed_repo):
    repo, _ = seed_repo
    report = (repo / "metrics/report.md").read_text()
    rows = [line for line in report.splitlines() if " as published: " in line]
    assert rows and all("this run " in line for line in rows)
    sections = {family: report.split(f"## {family}")[1].split("\n## ")[0] for family in FAMILIES}
    assert "corpus rows" in sections["matryoshka"] and "the project's way (corpus chunks): " in sections["matryoshka"]
    assert "document_length 180" in sections["colbert"]
    assert "the project's way (method kmeans_lloyd, document_length 300): " in sections["colbert"]
    assert "features.stage1.multihop.held_out_examples: f1 as published: 0.9814" in sections["reranker"]
    assert "the project's way (features.stage1.multihop): " in sections["reranker"]


def test_colbert_mining_does_not_depend_on_the_reranker(seed_repo):
    repo, _ = seed_repo
    assert "reranker" not in run(["dvc", "dag", "mine@colbert"], repo)


def test_every_checkpoint_reloads_with_its_model_cards_code(seed_repo, hub_twins):
    repo, _ = seed_repo
    cards = sorted(repo.glob("models/**/README.md"))
    assert len(cards) == 1 + 2 + 4 + 2  # matryoshka, dpr towers, reranker variants x stages, colbert variants
    for card in cards:
        code = card.read_text().split("```python\n")[1].split("```")[0]
        run([sys.executable, "-c", code], repo, **hub_twins)
        params = yaml.safe_load(card.read_text().split("```yaml\n")[1].split("```")[0])
        assert params["seed"] == 42


def test_a_second_repro_does_nothing(seed_repo, hub_twins):
    repo, _ = seed_repo
    output = run(["dvc", "repro"], repo, **hub_twins)
    assert "Running stage" not in output
    status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=repo, capture_output=True, text=True)
    assert "up to date" in status.stdout + status.stderr
