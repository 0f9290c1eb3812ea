"""DVC stage 'params': python stages/params.py (params.yaml as a whole, before every family's resolve)."""

import sys

from retrieval_pipeline.core.resolve import run_params

if __name__ == "__main__":
    sys.exit(run_params())
