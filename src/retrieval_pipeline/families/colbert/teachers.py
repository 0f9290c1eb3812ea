"""Teachers for distillation: anything that scores (query, document) pairs with one number, higher = more
relevant, and the check that a teacher ranks the labelled positives above what the miner does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from retrieval_pipeline.core.cross_encoders import load_cross_encoder, predict_pairs, shortest_first
from retrieval_pipeline.core.models import device, loading, locate


class BiEncoderTeacher:
    """A sentence-transformers bi-encoder: `scale` times the cosine of query and document, a logit on the scale
    MultipleNegativesRankingLoss trains it at. Each distinct text is encoded once."""

    def __init__(self, model, scale: float, batch_size: int) -> None:
        self.model, self.scale, self.batch_size = model, scale, batch_size

    def __call__(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        queries = list(dict.fromkeys(query for query, _ in pairs))
        documents = list(dict.fromkeys(document for _, document in pairs))
        encode = lambda texts: self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,  # noqa: E731
                                                 normalize_embeddings=True, show_progress_bar=True)
        query_vectors, document_vectors = encode(queries), encode(documents)
        query_index = {text: i for i, text in enumerate(queries)}
        document_index = {text: i for i, text in enumerate(documents)}
        rows = np.array([query_index[query] for query, _ in pairs], dtype=np.int64)
        columns = np.array([document_index[document] for _, document in pairs], dtype=np.int64)
        cosine = (query_vectors[rows] * document_vectors[columns]).sum(axis=1) if pairs else np.zeros(0)
        return (self.scale * cosine).astype(np.float32)


class CrossEncoderTeacher:
    """A sentence-transformers cross-encoder's raw logit."""

    def __init__(self, model, batch_size: int) -> None:
        self.model, self.batch_size = model, batch_size

    @classmethod
    def load(cls, reference: str, max_length: int, batch_size: int, key: str) -> CrossEncoderTeacher:
        return cls(load_cross_encoder(reference, key, max_length), batch_size)

    def __call__(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        return predict_pairs(self.model, pairs, self.batch_size, activation_fn=torch.nn.Identity())


class YesLogitTeacher:
    """An LLM reranker scored by the logit of "Yes" after its prompt, its input built the way the model's own
    reranking code builds it (BAAI/bge-reranker-v2-gemma): <bos> "A: {query}" (at most 3/4 of max_length
    tokens), a newline, "B: {passage}" cut so that the pair fits max_length, then a newline and the prompt.
    Only the passage is ever cut; the instruction and the query stay whole."""

    SEPARATOR = "\n"

    def __init__(self, model: str, prompt: str, max_length: int, batch_size: int, key: str) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source = locate(model, key)
        self.max_length, self.batch_size = max_length, batch_size
        dtype = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
        with loading(key, model):
            self.tokenizer = AutoTokenizer.from_pretrained(source.location, revision=source.revision,
                                                           padding_side="left")
            self.model = AutoModelForCausalLM.from_pretrained(source.location, revision=source.revision,
                                                              use_safetensors=True, dtype=dtype).to(device()).eval()
        self.yes = self._ids("Yes")[0]
        self.separator, self.prompt = self._ids(self.SEPARATOR), self._ids(prompt)

    def _ids(self, text: str, limit: int | None = None) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False, truncation=limit is not None,
                              max_length=limit)["input_ids"]

    def input_ids(self, query: str, passage: str) -> list[int]:
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        head = bos + self._ids(f"A: {query}", self.max_length * 3 // 4) + self.separator
        passage_ids = self._ids(f"B: {passage}", self.max_length)[:max(self.max_length - len(head), 0)]
        return head + passage_ids + self.separator + self.prompt

    def __call__(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        inputs = [{"input_ids": self.input_ids(query, passage)} for query, passage in pairs]
        return shortest_first(inputs, [len(item["input_ids"]) for item in inputs], self._yes_logits)

    @torch.no_grad()
    def _yes_logits(self, inputs: list[dict]) -> torch.Tensor:
        from tqdm import tqdm

        logits = []
        for start in tqdm(range(0, len(inputs), self.batch_size), desc="teacher"):
            batch = self.tokenizer.pad(inputs[start:start + self.batch_size], padding=True, return_tensors="pt")
            logits.append(self.model(**batch.to(self.model.device)).logits[:, -1, self.yes].float().cpu())
        return torch.cat(logits)


def teacher_warning(teacher_positive_mrr: float, miner_positive_mrr: float, report: Path, key: str) -> str | None:
    """A teacher that ranks the labelled positives no higher than the dense miner does has little to teach:
    distilling it can leave the student worse than its base model. Say so when mining, not after training."""
    if teacher_positive_mrr > miner_positive_mrr:
        return None
    return (f"warning: {report}: the teacher ranks the training positives no higher than the dense miner "
            f"(MRR of the positive {teacher_positive_mrr:.3f} against {miner_positive_mrr:.3f}); distilling it may "
            f"leave the fine-tuned model worse than its base. Check {key} before trusting this run.")
