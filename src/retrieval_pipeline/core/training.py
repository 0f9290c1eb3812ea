"""What every family's trainer shares."""

from __future__ import annotations

from pathlib import Path


def log_training_with_dvclive(trainer, directory: Path) -> None:
    """Record the trainer's logs under `directory` (on the main process only, so torchrun writes once)."""
    if not trainer.is_world_process_zero():
        return
    from dvclive import Live
    from transformers.integrations import DVCLiveCallback

    trainer.add_callback(DVCLiveCallback(live=Live(dir=str(directory), dvcyaml=None, save_dvc_exp=False)))
