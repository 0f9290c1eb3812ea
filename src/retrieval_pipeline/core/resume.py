"""Resuming a stopped train stage from its last finished epoch.

A train stage keeps its resume state in `.resume/<stage>@<family>/` at the repository root: outside its outputs,
which DVC removes before it reruns the stage, and git-ignored. It holds the trainer's epoch checkpoints of each run
(a run is one trained model: a variant, a curriculum stage), each with the run's DVCLive log so far, and a finished
run's output, scores and log, for stages that train several models one after another. The state is keyed to what
the stage's result depends on: the params sections it tracks, the content of every dependency dvc.yaml lists for it,
and the library versions, device and process count. A state of any other key is discarded, never mixed in. The
stage removes the state when it completes.

The checkpoints are sentence-transformers' own, but nothing in them is a pickle: the optimizer's tensors are
safetensors, its settings, the scheduler and the random number generators' states are JSON, and the training
arguments are written as JSON in place of `training_args.bin`. The trainer resumes through its own
`resume_from_checkpoint`, so the resumed run sees the same data order, learning rates and random draws as one that
was never stopped, and ends with the same weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from sentence_transformers import SentenceTransformerTrainer
from sentence_transformers.cross_encoder import CrossEncoderTrainer
from transformers import TrainerCallback
from transformers.trainer import TRAINER_STATE_NAME, TRAINING_ARGS_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from retrieval_pipeline.core.dag import declared_deps, declared_sections
from retrieval_pipeline.core.errors import OutputError
from retrieval_pipeline.core.family import Family, Scores, read_scores, write_scores
from retrieval_pipeline.core.io import atomic_write_json, cannot_write, remove, write_failure
from retrieval_pipeline.core.sources import local_files
from retrieval_pipeline.core.training import log_training

KEY_FILE = "key.json"
# in a checkpoint, beside the trainer's own files
OPTIMIZER_TENSORS, OPTIMIZER_SETTINGS = "optimizer.safetensors", "optimizer.json"
SCHEDULER_STATE, SCALER_STATE, TRAINING_ARGS = "scheduler.json", "scaler.json", "training_args.json"
LOG_SNAPSHOT = "dvclive"
# in a finished run's folder
FINISHED = "finished"


def main_process() -> bool:
    """Under torchrun, one process manages the resume state (the others read it)."""
    return os.environ.get("RANK", "0") == "0"


class SafeCheckpoints:
    """A trainer whose checkpoints resume without unpickling anything (see the module's docstring). A stage sets
    `random_generators` for generators of its own (colbert's pool-factor draws) and `training_log` for the run's
    DVCLive folder, which each checkpoint keeps a copy of."""

    random_generators: dict[str, np.random.Generator] = {}
    training_log: Path | None = None

    def _save_checkpoint(self, model, trial) -> None:
        """The trainer's checkpoint; where the disk refuses it, no half-written checkpoint and one line naming the
        folder (safetensors' errors name no file)."""
        try:
            super()._save_checkpoint(model, trial)
        except Exception as error:
            failure = write_failure(error)
            if failure is None:
                raise
            remove(Path(self.args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            raise cannot_write(Path(self.args.output_dir).resolve(), failure.strerror) from error

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        super()._save(output_dir, state_dict)
        folder = Path(output_dir or self.args.output_dir)
        (folder / TRAINING_ARGS_NAME).unlink(missing_ok=True)  # torch.save of the arguments: a pickle
        (folder / TRAINING_ARGS).write_text(self.args.to_json_string(), encoding="utf-8")

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if not self.args.should_save:
            return
        folder = Path(output_dir)
        state = self.optimizer.state_dict()
        tensors, values = {}, {}
        for index, entries in state["state"].items():
            for name, value in entries.items():
                if torch.is_tensor(value):
                    tensors[f"{index}.{name}"] = value.detach().cpu().contiguous()
                else:
                    values.setdefault(str(index), {})[name] = value
        save_file(tensors, str(folder / OPTIMIZER_TENSORS))
        write_json(folder / OPTIMIZER_SETTINGS, {"param_groups": state["param_groups"], "state": values})
        write_json(folder / SCHEDULER_STATE, self.lr_scheduler.state_dict())

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if checkpoint is None:
            return
        folder = Path(checkpoint)
        settings = read_json(folder / OPTIMIZER_SETTINGS)
        state: dict[int, dict] = {int(index): dict(entries) for index, entries in settings["state"].items()}
        for key, tensor in load_file(str(folder / OPTIMIZER_TENSORS)).items():
            index, name = key.split(".", 1)
            state.setdefault(int(index), {})[name] = tensor
        current = self.optimizer.state_dict()["param_groups"]
        groups = [{key: tuple(value) if isinstance(now.get(key), tuple) else value for key, value in saved.items()}
                  for saved, now in zip(settings["param_groups"], current)]  # JSON has no tuples (AdamW's betas)
        self.optimizer.load_state_dict({"state": state, "param_groups": groups})
        self.lr_scheduler.load_state_dict(read_json(folder / SCHEDULER_STATE))

    def _save_scaler(self, output_dir: str) -> None:
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is not None and self.args.should_save:
            write_json(Path(output_dir) / SCALER_STATE, scaler.state_dict())

    def _load_scaler(self, checkpoint: str | None) -> None:
        scaler = getattr(self.accelerator, "scaler", None)
        if checkpoint is not None and scaler is not None and (Path(checkpoint) / SCALER_STATE).is_file():
            scaler.load_state_dict(read_json(Path(checkpoint) / SCALER_STATE))

    def _save_rng_state(self, output_dir: str) -> None:
        folder = Path(output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        process = self.args.process_index
        python_state = random.getstate()
        numpy_state = np.random.get_state()
        tensors = {"cpu": torch.random.get_rng_state()}
        if torch.cuda.is_available():
            tensors.update({f"cuda.{index}": state for index, state in enumerate(torch.cuda.get_rng_state_all())})
        save_file(tensors, str(folder / f"rng-{process}.safetensors"))
        write_json(folder / f"rng-{process}.json", {
            "python": [python_state[0], list(python_state[1]), python_state[2]],
            "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
            "generators": {name: generator.bit_generator.state for name, generator in self.random_generators.items()},
            # the loss summed since the last log, and over the run: the next logged loss and the run's mean use them
            "loss": {"since_log": self._tr_loss.item(), "total": self._total_loss_scalar,
                     "last_logged_step": self._globalstep_last_logged},
        })
        # here rather than in a callback: the trainer writes its state after this, and a checkpoint without its
        # trainer state is incomplete, so the snapshot is in every checkpoint a rerun resumes from
        if self.training_log is not None and self.args.should_save and self.training_log.is_dir():
            shutil.copytree(self.training_log, folder / LOG_SNAPSHOT, dirs_exist_ok=True)

    def _load_rng_state(self, checkpoint: str | None) -> None:
        if checkpoint is None:
            return
        folder, process = Path(checkpoint), self.args.process_index
        values = read_json(folder / f"rng-{process}.json")
        tensors = load_file(str(folder / f"rng-{process}.safetensors"))
        version, internal, gauss = values["python"]
        random.setstate((version, tuple(internal), gauss))
        kind, keys, *rest = values["numpy"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
        torch.random.set_rng_state(tensors["cpu"])
        if torch.cuda.is_available():
            torch.cuda.set_rng_state_all([tensors[f"cuda.{index}"] for index in range(torch.cuda.device_count())])
        for name, generator in self.random_generators.items():
            generator.bit_generator.state = values["generators"][name]

    def restore_loss(self, checkpoint: Path) -> None:
        """The loss sums as they were at `checkpoint` (the trainer zeroes them as it starts)."""
        loss = read_json(checkpoint / f"rng-{self.args.process_index}.json")["loss"]
        self._tr_loss = torch.tensor(loss["since_log"], device=self.args.device)
        self._total_loss_scalar, self._globalstep_last_logged = loss["total"], loss["last_logged_step"]


class RestoreLoss(TrainerCallback):
    """Puts the loss sums back once the trainer has zeroed them, before the first step."""

    def __init__(self, trainer: SafeCheckpoints, checkpoint: Path) -> None:
        self.trainer, self.checkpoint = trainer, checkpoint

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer.restore_loss(self.checkpoint)


class ResumableTrainer(SafeCheckpoints, SentenceTransformerTrainer):
    """sentence-transformers' trainer (pylate's ColBERT trains with it too), with checkpoints free of pickles."""


class ResumableCrossEncoderTrainer(SafeCheckpoints, CrossEncoderTrainer):
    """sentence-transformers' cross-encoder trainer, with checkpoints free of pickles."""


def write_json(path: Path, payload) -> None:
    path.write_text(json.dumps(payload) + "\n", encoding="utf-8")


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def discard(folder: Path, what: str) -> None:
    """Delete `folder`, or stop the stage with one line naming it where it cannot be deleted whole: a state that
    stays could otherwise be taken for a later run's."""
    problems: list[OSError] = []
    shutil.rmtree(folder, onerror=lambda function, path, error: problems.append(error[1]))
    if folder.exists():
        reason = next((problem.strerror for problem in problems if problem.strerror), "it stays")
        raise OutputError(f"{folder}: cannot discard {what} ({reason}); expected a folder this user can delete: "
                          "delete it, then rerun the stage")


def state_key(family: Family, stage: str) -> dict:
    """What the stage's result depends on: its params sections, the content of its dependencies in dvc.yaml, and
    what runs it."""
    import sentence_transformers
    import transformers

    root = family.paths.root
    params = {}
    for section in declared_sections(root, stage):
        value = getattr(family.params, section)
        params[section] = value.model_dump(mode="json") if hasattr(value, "model_dump") else value
    contents = {}
    for dep in declared_deps(root, stage, family.name):
        path = root / dep
        listing = json.dumps(local_files(path) if path.exists() else None, sort_keys=True)
        contents[dep] = hashlib.sha256(listing.encode()).hexdigest()
    return {"stage": f"{stage}@{family.name}", "profile": family.profile, "params": params, "deps": contents,
            "torch": torch.__version__, "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "device": (f"{torch.cuda.device_count()} x {torch.cuda.get_device_name()}" if torch.cuda.is_available()
                       else "cpu"),
            "processes": int(os.environ.get("WORLD_SIZE", "1"))}


class Resume:
    """One stage's resume state: `train` runs a trainer from its last complete checkpoint, `keep` and `finished`
    carry a finished run across a stop, and `close` removes it all once the stage's outputs are written."""

    def __init__(self, family: Family, stage: str) -> None:
        self.folder = family.paths.resume(stage).absolute()  # what an error names
        self.key = state_key(family, stage)
        self.key["digest"] = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()
        if main_process() and self.folder.exists() and not self.carries_key():
            print(f"{stage}: discarding the resume state of other params or inputs")
            discard(self.folder, "the resume state of other params or inputs")

    def carries_key(self) -> bool:
        """Whether the state on disk is this run's: nothing else is ever resumed from, whatever a discard left."""
        try:
            return read_json(self.folder / KEY_FILE).get("digest") == self.key["digest"]
        except (OSError, ValueError, AttributeError):
            return False

    def output_dir(self, run: str) -> Path:
        """The trainer's output_dir for `run`: relative to the working directory (the repository, where DVC runs a
        stage), so that the training arguments DVCLive records name no machine's path."""
        folder = self.folder / run
        return Path(os.path.relpath(folder)) if folder.is_relative_to(Path.cwd()) else folder

    def checkpoint(self, run: str) -> Path | None:
        """The run's last complete checkpoint: its trainer state is written last, after weights, optimizer and RNG.
        None where the state is not this run's."""
        if not self.carries_key():
            return None
        candidates = sorted(self.output_dir(run).glob(f"{PREFIX_CHECKPOINT_DIR}-*"),
                            key=lambda path: int(path.name.rsplit("-", 1)[-1]), reverse=True)
        for candidate in candidates:
            try:
                read_json(candidate / TRAINER_STATE_NAME)
            except (OSError, ValueError):
                continue
            return candidate
        return None

    def train(self, trainer, run: str, log: Path, label: str):
        """trainer.train(), from the run's last complete checkpoint where there is one; its DVCLive log goes on
        from the same point."""
        trainer.accelerator.wait_for_everyone()  # the main process has discarded a stale state
        checkpoint = self.checkpoint(run)
        if checkpoint is not None and trainer.is_world_process_zero():
            remove(log)
            if (checkpoint / LOG_SNAPSHOT).is_dir():
                shutil.copytree(checkpoint / LOG_SNAPSHOT, log)
            epoch = read_json(checkpoint / TRAINER_STATE_NAME)["epoch"]
            print(f"{label}: resuming from epoch {round(epoch)}")
        if main_process() and not self.carries_key():  # a new state: the discard left no folder
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.folder / KEY_FILE, self.key)
        trainer.training_log = log
        log_training(trainer, log, label, resume=checkpoint is not None)
        if checkpoint is not None:
            trainer.add_callback(RestoreLoss(trainer, checkpoint))
        try:
            return trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        except BaseException:
            if not self.resumable():  # stopped before its first checkpoint: nothing to resume from
                self.close()
            raise

    def resumable(self) -> bool:
        """Whether a rerun would resume from something: a run's complete checkpoint, or a finished run."""
        runs = [path.name for path in self.folder.iterdir() if path.is_dir()] if self.folder.is_dir() else []
        return any(self.checkpoint(run) or (self.folder / run / FINISHED / "scores").is_dir() for run in runs)

    def keep(self, run: str, output: Path, log: Path, scores: dict[str, Scores]) -> None:
        """Keep a finished run's output folder, DVCLive log and scores, and drop its checkpoints."""
        if not main_process():
            return
        kept = self.folder / run / FINISHED
        remove(kept)
        shutil.copytree(output, kept / "output")
        if log.is_dir():
            shutil.copytree(log, kept / "log")
        write_scores(kept / "scores", scores)
        for checkpoint in (self.folder / run).glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
            remove(checkpoint)

    def finished(self, run: str, output: Path, log: Path, label: str) -> dict[str, Scores] | None:
        """A run finished before the stage stopped: its output and log put back, and its scores; None if it did not
        finish."""
        kept = self.folder / run / FINISHED
        if not (kept / "scores").is_dir() or not self.carries_key():
            return None
        remove(output)
        shutil.copytree(kept / "output", output)
        if (kept / "log").is_dir():
            remove(log)
            shutil.copytree(kept / "log", log)
        print(f"{label}: finished before the stop, kept")
        return read_scores(kept / "scores")

    def close(self) -> None:
        if main_process():
            remove(self.folder)
            with contextlib.suppress(OSError):  # .resume/ itself, once empty (not where it is a mount point)
                self.folder.parent.rmdir()
