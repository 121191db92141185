"""Structured-data lookup cases (issue 20) for the benchmark: the generator lives in the library
(``gemfilter_rag.training.structured``, where readout training draws its ``TRAIN_SEEDS`` cases), so that
both use the very same code; the benchmark draws ``EVAL_SEEDS`` only (``make_case`` refuses the other split).
"""

from __future__ import annotations

from gemfilter_rag.training.structured import (
    CHUNKS,
    EVAL_SEEDS,
    GENERATORS,
    JSON_PAIRS,
    SPLITS,
    TRAIN_SEEDS,
    StructuredCase,
    chunk_lines,
    code_functions,
    csv_table,
    gold_index,
    gold_span,
    key_value_json,
    log_lines,
    make_case,
    markdown_table,
)

__all__ = [
    "CHUNKS",
    "EVAL_SEEDS",
    "GENERATORS",
    "JSON_PAIRS",
    "SPLITS",
    "TRAIN_SEEDS",
    "StructuredCase",
    "chunk_lines",
    "code_functions",
    "csv_table",
    "gold_index",
    "gold_span",
    "key_value_json",
    "log_lines",
    "make_case",
    "markdown_table",
]
