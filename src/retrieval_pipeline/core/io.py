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

# What makes a write fail for a reason the user can fix: no space, no permission, a read-only file system.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}
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


def remove_partials(final: Path) -> None:
    """Delete what a killed run writing `final` left: a folder's partial copy inside it (`.partial-<pid>`) or its
    finished copy beside it (`.<name>.replacing-<pid>`), a file's partial copy beside it (`.<name>.partial-<pid>`)."""
    for leftover in [*final.glob(".partial-*"), *final.parent.glob(f".{final.name}.replacing-*"),
                     *final.parent.glob(f".{final.name}.partial-*")]:
        remove(leftover)


@contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a folder that replaces `final` only if the block succeeds. It is made inside `final`, so whatever
    removes that output also removes what a killed run left in it: DVC does before it reruns a stage or restores
    the stage's outputs from its run-cache, and a stage that fails does (core/stage.py)."""
    created = not final.exists()
    partial = final / f".partial-{os.getpid()}"
    try:
        final.mkdir(parents=True, exist_ok=True)
        remove_partials(final)
        partial.mkdir()
        yield partial
        finished = final.with_name(f".{final.name}.replacing-{os.getpid()}")
        partial.rename(finished)
        shutil.rmtree(final)
        finished.rename(final)
    except BaseException as error:
        shutil.rmtree(final if created else partial, ignore_errors=True)
        failure = write_failure(error) if isinstance(error, Exception) else None
        if failure is not None and not isinstance(error, OutputError):
            raise cannot_write(final, failure.strerror) from error
        raise


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
