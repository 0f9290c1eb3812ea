"""DVC stage 'base': python stages/base.py <family>."""

import sys

from retrieval_pipeline.core.stage import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("base"))
