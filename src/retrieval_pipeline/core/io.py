"""Writing outputs so that a failed stage never leaves a half-written one behind, and says in one line why an
output could not be written."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from retrieval_pipeline.core.errors import OutputError

# What makes a write fail for a reason the user can fix: no space, no permission, a read-only file system, a file
# larger than the process may write (`ulimit -f`).
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG}
# a folder's copy being written, inside the folder it will replace
PARTIAL = ".partial-"
# safetensors (Rust) names the OS error only in its message
RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def write_failure(error: BaseException) -> OSError | None:
    """The OS error that made a write fail for a reason the user can fix, found in `error` or what led to it;
    None when it failed for another reason."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in WRITE_ERRNOS:
            return seen
        code = RUST_OS_ERROR.search(str(seen))
        if code and int(code.group(1)) in WRITE_ERRNOS:
            return OSError(int(code.group(1)), os.strerror(int(code.group(1))))
        seen = seen.__cause__ or seen.__context__
    return None


def cannot_write(output: Path | str, reason: str) -> OutputError:
    return OutputError(f"{output}: cannot write ({reason}); expected an output folder this user can write, with "
                       "free space")


def remove(path: Path) -> None:
    """Delete a file or folder if it is there and can be deleted (on a read-only disk it cannot, nor was it made)."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def _beside(final: Path, role: str) -> list[Path]:
    return sorted(final.parent.glob(f".{final.name}.{role}-*"))


def remove_partials(final: Path) -> None:
    """Put `final` back in order after a killed write (core/io.py's swap, step by step):
    - a folder's partial copy inside it (`.partial-<pid>`), a file's beside it (`.<name>.partial-<pid>`): deleted;
    - the finished copy beside it (`.<name>.replacing-<pid>`): moved in where the kill came after the old copy
      was moved aside (`final` is absent), deleted where it came before;
    - the old copy moved aside (`.<name>.replaced-<pid>`): deleted once `final` is whole again."""
    finished = _beside(final, "replacing")
    if finished and not final.exists():
        finished.pop().rename(final)
    for leftover in [*final.glob(f"{PARTIAL}*"), *finished, *_beside(final, "replaced"), *_beside(final, "partial")]:
        remove(leftover)


def swap_in(finished: Path, final: Path) -> None:
    """Move the complete folder `finished` (beside `final`) in place of `final`. Each step is one rename, so at
    every instant `final` is the old folder whole or the new one whole (absent for the instant between the two
    renames, never a mix); remove_partials completes or undoes what a kill between steps leaves, and a failed step
    puts the old folder back."""
    old = final.with_name(f".{final.name}.replaced-{os.getpid()}")
    final.rename(old)
    try:
        finished.rename(final)
    except BaseException:
        old.rename(final)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a folder that replaces `final` only if the block succeeds. It is made inside `final`, so whatever
    removes that output also removes what a killed run left in it: DVC does before it reruns a stage or restores
    the stage's outputs from its run-cache, and a stage that fails does (core/stage.py)."""
    remove_partials(final)
    created = not final.exists()
    partial = final / f"{PARTIAL}{os.getpid()}"
    finished = final.with_name(f".{final.name}.replacing-{os.getpid()}")
    try:
        final.mkdir(parents=True, exist_ok=True)
        partial.mkdir()
        yield partial
        partial.rename(finished)
        swap_in(finished, final)
    except BaseException as error:
        shutil.rmtree(final if created else partial, ignore_errors=True)
        remove(finished)
        failure = write_failure(error) if isinstance(error, Exception) else None
        if failure is not None and not isinstance(error, OutputError):
            raise cannot_write(final, failure.strerror) from error
        raise


def written(output: Path) -> bool:
    """Whether an output is there: a file, or a folder holding more than a killed write's partial copy."""
    return output.is_file() or output.is_dir() and any(not entry.name.startswith(PARTIAL)
                                                       for entry in output.iterdir())


def atomic_write_text(path: Path, text: str) -> None:
    scratch = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_partials(path)
        scratch.write_text(text, encoding="utf-8")
        os.replace(scratch, path)
    except OSError as error:
        scratch.unlink(missing_ok=True)
        failure = write_failure(error)
        if failure is not None:
            raise cannot_write(path, failure.strerror) from error
        raise


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")
