"""Puts tests/ on the path, so that every test folder (the integration packages' too) shares
``tinymodels`` and ``gemfilter_fixtures``, and sets the offline environment the tests run in."""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent / "tests"))
