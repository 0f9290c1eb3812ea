"""Preflight, before any stage: python stages/preflight.py [family ...] (every model and dataset the DAG loads)."""

import sys

from retrieval_pipeline.core.preflight import main

if __name__ == "__main__":
    sys.exit(main())
