"""DVC stage 'report': python stages/report.py (after every family's evaluate)."""

import sys

from retrieval_pipeline.report.page import main

if __name__ == "__main__":
    sys.exit(main())
