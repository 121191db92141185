"""``python -m gemfilter_rag.serve [options]``: the same as ``gemfilter serve [options]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .command import add_arguments, run


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``gemfilter serve``'s options and run the service; 2 for bad options, as the CLI does."""
    parser = argparse.ArgumentParser(prog="python -m gemfilter_rag.serve", description="serve compression over HTTP")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"gemfilter serve: error: {err}", file=sys.stderr)
        return 2
    except ImportError as err:
        print(f"gemfilter serve: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
