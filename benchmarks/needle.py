"""Needle recall of the shipped default: does the compressed context keep the needle sentence?

Prompts longer than the filter model's positions (e.g. 32K tokens for the 8K default) are scored
in windows automatically (``gemfilter_rag.windows``).

    python -m benchmarks.needle --lengths 4096 --depths 5 --needles 5 --budgets 256
    python -m benchmarks.needle --lengths 32768 --depths 1 --needles 1 --budgets 256   # windows
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from gemfilter_rag import GemFilterCompressor
from gemfilter_rag.data import essays_haystack
from gemfilter_rag.needles import NEEDLES, answer_found, make_probes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lengths", type=int, nargs="+", default=[4096])
    ap.add_argument("--depths", type=int, default=5)
    ap.add_argument("--needles", type=int, default=5)
    ap.add_argument("--budgets", type=int, nargs="+", default=[256])
    ap.add_argument("--granularities", nargs="+", default=["sentence", "token"])
    ap.add_argument("--out", default="benchmarks/results/needle.json")
    args = ap.parse_args()

    comp = GemFilterCompressor.from_pretrained()
    depths = [round((i + 0.5) / args.depths, 4) for i in range(args.depths)]
    probes = make_probes(comp.tokenizer, essays_haystack(), args.lengths, depths, NEEDLES[: args.needles])
    rows = []
    for probe in probes:
        for granularity in args.granularities:
            comp.config = comp.config.with_options(granularity=granularity)
            for budget in args.budgets:
                t0 = time.perf_counter()
                res = comp.compress([probe.context], probe.question, top_k=budget)
                a, b = probe.needle_span
                whole = any(s <= a and b <= e for s, e in res.documents[0].spans)
                rows.append(
                    {
                        "length": probe.length,
                        "depth": probe.depth,
                        "question": probe.question,
                        "granularity": granularity,
                        "budget": budget,
                        "needle_sentence_kept": whole,
                        "answer_kept": answer_found(res.text, probe.answers),
                        "context_tokens": res.original_tokens,
                        "seconds": round(time.perf_counter() - t0, 2),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"filter_layer": comp.filter_layer, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
