"""DVC stage 'resolve': python stages/resolve.py <family> (the params its other stages track)."""

import sys

from retrieval_pipeline.core.resolve import run_resolve

if __name__ == "__main__":
    sys.exit(run_resolve())
