"""``python -m gemfilter_rag.serve [options]``: the same as ``gemfilter serve [options]``."""

from __future__ import annotations

import sys

from ..cli import main

if __name__ == "__main__":
    raise SystemExit(main(["serve", *sys.argv[1:]]))
