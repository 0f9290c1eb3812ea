"""What every family's trainer shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def shared_arguments(seed: int, bf16: bool, warmup_ratio: float) -> dict[str, Any]:
    """Trainer arguments every family sets alike: seeded model and data order, bf16 only where the GPU
    supports it, the CPU when there is no GPU, and logs through DVCLive rather than a tracker's default."""
    cuda = torch.cuda.is_available()
    return {"seed": seed, "data_seed": seed, "bf16": bf16 and cuda and torch.cuda.is_bf16_supported(),
            "use_cpu": not cuda, "report_to": "none",
            "warmup_steps": warmup_ratio}  # transformers 5 reads a value below 1 as a ratio


def log_training_with_dvclive(trainer, directory: Path) -> None:
    """Record the trainer's logs under `directory` (on the main process only, so torchrun writes once)."""
    if not trainer.is_world_process_zero():
        return
    from dvclive import Live
    from transformers.integrations import DVCLiveCallback

    trainer.add_callback(DVCLiveCallback(live=Live(dir=str(directory), dvcyaml=None, save_dvc_exp=False)))
