"""DVC stage 'train': python stages/train.py <family>."""

import sys

from retrieval_pipeline.core.stage import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("train"))
