"""Put a later run's rows into a finished benchmark run: a re-run method on the same items, or a data set
the first run did not reach.

    python -m benchmarks.merge standard standard-ef   # rows of standard-ef's methods replace standard's

For a peer that had to be run again (a fixed wrapper) without repeating hours of the others: both runs
must share the preset's items (same sizes, seed and data). The merged results keep the first run's
configuration and timings, record each later run's commit, methods and timings under ``merges``, and
get their summary, plots and README section regenerated from the merged rows.
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import RESULTS_DIR

Row = dict[str, Any]


def merge_rows(base: Sequence[Row], extra: Sequence[Row]) -> list[Row]:
    """``base`` without the (data set, method) pairs that ``extra`` has, then ``extra``.

    A data set the base run lacks is added whole; on a data set both have, ``extra`` must hold the base
    run's items (refused otherwise)."""
    pairs = {(r["dataset"], r["method"]) for r in extra}
    base_sets = {r["dataset"] for r in base}
    items = {f"{r['dataset']}:{r['id']}" for r in base}
    stray = sorted({f"{r['dataset']}:{r['id']}" for r in extra if r["dataset"] in base_sets} - items)
    if stray:
        raise ValueError(f"extra rows: items {stray[:5]} are not in the base run; run the same preset and seed.")
    return [r for r in base if (r["dataset"], r["method"]) not in pairs] + list(extra)


def load_run(out_dir: Path, name: str) -> tuple[dict[str, Any], list[Row]]:
    """A finished run's results JSON and its rows."""
    results = json.loads((out_dir / f"{name}.json").read_text())
    with gzip.open(out_dir / results["rows_file"], "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return results, rows


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from .report import write_results

    p = argparse.ArgumentParser(prog="python -m benchmarks.merge", description=__doc__)
    p.add_argument("base", help="results name of the full run (e.g. standard)")
    p.add_argument("extra", help="results name of the run whose methods replace the base run's")
    p.add_argument("--output-dir", default=str(RESULTS_DIR))
    p.add_argument("--no-readme", action="store_true")
    args = p.parse_args(argv)
    out_dir = Path(args.output_dir)
    results, base = load_run(out_dir, args.base)
    extra_results, extra = load_run(out_dir, args.extra)
    rows = merge_rows(base, extra)
    added = [name for name in extra_results.get("datasets", {}) if name not in results["datasets"]]
    for name in added:  # a data set the base run did not reach
        results["datasets"][name] = extra_results["datasets"][name]
    merges = results.setdefault("merges", [])
    merges.append(
        {
            "from": args.extra,
            "commit": extra_results.get("commit"),
            "methods": sorted({r["method"] for r in extra}),
            "datasets_added": added,
            "timings_s": extra_results.get("timings_s"),
        }
    )
    results["config"]["output_dir"] = str(out_dir)
    write_results(results, rows, list(results.get("readers") or {}), readme=not args.no_readme)
    print(f"{args.base}: {len(extra)} rows of {merges[-1]['methods']} from {args.extra} (data sets added: {added})")
    return results


if __name__ == "__main__":
    main()
