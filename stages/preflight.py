"""Preflight, before any stage: python stages/preflight.py [family ...] (every model and dataset the DAG loads)."""

import sys

from retrieval_pipeline.core.stage import run_preflight

if __name__ == "__main__":
    sys.exit(run_preflight())
