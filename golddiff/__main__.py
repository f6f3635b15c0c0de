"""python -m golddiff {info,sample,bench}: see golddiff.cli."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
