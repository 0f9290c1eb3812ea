"""The code passes ruff with the rules configured in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import REPO


def test_ruff_is_clean():
    ruff = Path(sys.executable).parent / "ruff"
    result = subprocess.run([str(ruff), "check", "src", "stages", "tests"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
