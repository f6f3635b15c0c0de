"""python -m golddiff {info,sample,bench}: see golddiff.cli."""

import sys

if __name__ == "__main__":
    try:
        from .cli import main

        status = main()
    except KeyboardInterrupt:  # Ctrl-C while the modules load: no traceback
        print("interrupted", file=sys.stderr)
        status = 130
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early: no traceback
        sys.stderr.close()
        status = 0
    sys.exit(status)
