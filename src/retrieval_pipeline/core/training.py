"""What every family's trainer shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback


def shared_arguments(seed: int, bf16: bool, warmup_ratio: float, fp16: bool = False) -> dict[str, Any]:
    """Trainer arguments every family sets alike: seeded model and data order, bf16 (or fp16) only on a GPU that
    supports it (bf16 where both are asked for), the CPU when there is no GPU, and logs through DVCLive rather than a
    tracker's default."""
    cuda = torch.cuda.is_available()
    use_bf16 = bf16 and cuda and torch.cuda.is_bf16_supported()
    return {"seed": seed, "data_seed": seed, "bf16": use_bf16, "fp16": fp16 and cuda and not use_bf16,
            "use_cpu": not cuda, "report_to": "none",
            "warmup_steps": warmup_ratio}  # transformers 5 reads a value below 1 as a ratio


def log_training(trainer, directory: Path, label: str, resume: bool = False) -> None:
    """Record the trainer's logs under `directory` with DVCLive (`resume`: after the steps already there), and keep
    the console to a progress bar and one line per epoch (on the main process only, so torchrun writes once)."""
    if not trainer.is_world_process_zero():
        return
    from dvclive import Live
    from transformers.integrations import DVCLiveCallback

    if torch.cuda.is_available():
        trainer.add_callback(PeakMemory())
    live = Live(dir=str(directory), dvcyaml=None, save_dvc_exp=False, resume=resume)
    trainer.add_callback(DVCLiveCallback(live=live))
    console_lines(trainer, label)


def console_lines(trainer, label: str) -> None:
    """Keep the trainer's console to a progress bar that vanishes when done and one line per epoch, in place of
    transformers' own bar and the raw dict of every log it prints."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(EpochLines(label))


class PeakMemory(TrainerCallback):
    """Adds the GPU memory peak so far (GiB, what PyTorch allocated) to every training log, before DVCLive records
    it: the run's summary then holds its peak, to set beside the preflight's estimate."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None:
            logs["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30


class EpochLines(TrainerCallback):
    """A step progress bar that vanishes when done, and per epoch one line: the mean training loss and, when the
    trainer evaluates, the metric that selects the checkpoint. Every logged value still goes to DVCLive."""

    def __init__(self, label: str) -> None:
        self.label, self.bar, self.losses, self.pending = label, None, [], None

    def on_train_begin(self, args, state, control, **kwargs):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=state.max_steps, desc=self.label, leave=False, dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))

    def on_epoch_end(self, args, state, control, **kwargs):
        loss = sum(self.losses) / len(self.losses) if self.losses else float("nan")
        self.losses = []
        self.pending = f"{self.label}: epoch {round(state.epoch or 0)}/{round(args.num_train_epochs)}  loss {loss:.4f}"
        if args.eval_strategy == "no":  # the enum equals its value; its str() is "IntervalStrategy.NO"
            self._emit()

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.pending is None:
            return
        name = args.metric_for_best_model
        key = name if name and name in (metrics or {}) else f"eval_{name}" if name else None
        if key and key in metrics:
            self.pending += f"  {key.removeprefix('eval_')} {metrics[key]:.4f}"
        self._emit()

    def on_train_end(self, args, state, control, **kwargs):
        if self.pending:
            self._emit()
        self.bar.close()

    def _emit(self) -> None:
        self.bar.write(self.pending)
        self.pending = None
