"""core/io.py: an output folder is replaced all at once. A writer killed (SIGKILL) after each step of the swap
leaves the output as the old folder whole or the new one whole (absent only between its two renames, never a mix),
and the next write's start-up puts it in order with nothing left beside it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from retrieval_pipeline.core.io import atomic_directory, remove_partials

OLD = {"corpus.parquet": "old corpus", "queries.parquet": "old queries", "qrels.parquet": "old qrels",
       "prepare.json": "old record"}
NEW = {name: text.replace("old", "new") for name, text in OLD.items()}

# The writer, killed by a signal it sends itself right after the step its second argument names: the Nth rename of
# the swap, or midway through deleting the old folder (one of its files gone).
WRITER = """
import os, shutil, signal, sys
from pathlib import Path
from retrieval_pipeline.core import io

final, kill_at = Path(sys.argv[1]), sys.argv[2]
renames, rename = [0], Path.rename

def counted_rename(self, target):
    moved = rename(self, target)
    renames[0] += 1
    if kill_at == f"rename {renames[0]}":
        os.kill(os.getpid(), signal.SIGKILL)
    return moved

def killed_midway(path, *args, **kwargs):
    next(file for file in sorted(Path(path).rglob("*")) if file.is_file()).unlink()
    os.kill(os.getpid(), signal.SIGKILL)

Path.rename = counted_rename
if kill_at == "deleting the old folder":
    io.shutil.rmtree = killed_midway
with io.atomic_directory(final) as out:
    for name, text in %r.items():
        (out / name).write_text(text)
    if kill_at == "writing":
        os.kill(os.getpid(), signal.SIGKILL)
"""
# What each kill leaves in place of the output (before any repair), and what the next start-up makes of it.
KILLS = [("writing", OLD, OLD), ("rename 1", OLD, OLD), ("rename 2", None, NEW), ("rename 3", NEW, NEW),
         ("deleting the old folder", NEW, NEW)]


def visible(folder: Path) -> dict[str, str] | None:
    """The output as a reader sees it (a hidden partial copy inside aside): its files and their text."""
    if not folder.exists():
        return None
    return {path.name: path.read_text() for path in folder.iterdir() if not path.name.startswith(".")}


def beside(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.parent.iterdir() if path != folder)


@pytest.mark.parametrize(("kill_at", "left", "repaired"), KILLS, ids=[kill[0] for kill in KILLS])
def test_a_write_killed_at_each_step_leaves_the_old_or_the_new_output_whole(tmp_path, kill_at, left, repaired):
    final = tmp_path / "data" / "prepared"
    final.mkdir(parents=True)
    for name, text in OLD.items():
        (final / name).write_text(text)
    killed = subprocess.run([sys.executable, "-c", WRITER % (NEW,), str(final), kill_at], capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()
    assert visible(final) == left

    remove_partials(final)  # what the next write does first
    assert visible(final) == repaired
    assert beside(final) == [] and not list(final.glob(".*"))

    with atomic_directory(final) as out:
        (out / "prepare.json").write_text("rerun")
    assert visible(final) == {"prepare.json": "rerun"} and beside(final) == []


def test_a_failed_write_keeps_the_old_output_and_leaves_nothing(tmp_path):
    final = tmp_path / "prepared"
    final.mkdir()
    (final / "prepare.json").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(final) as out:
        (out / "prepare.json").write_text("half")
        raise RuntimeError("the stage failed")
    assert visible(final) == {"prepare.json": "old"} and beside(final) == [] and not list(final.glob(".*"))
