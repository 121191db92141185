"""The golden test: ``compress`` and ``generate`` return what they returned when the record was written.

``tests/golden/compress.json`` was first written by ``python tests/golden_cases.py`` on the commit before the
move to capture / FilterModel / scorers / pipeline, and written again when the budget began to count the
separators between kept documents (scores unchanged; kept tokens and texts as that rule gives them). Tiny
models of every architecture, both scorers, every granularity, both rule-based priors, windows and
``generate``; the real default model in the ``real`` suite. Spans and kept tokens must be equal, scores
within 1e-5.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from golden_cases import GOLDEN, assert_matches, cases, compute

EXPECTED: dict[str, Any] = json.loads(GOLDEN.read_text())
CASES = cases()


def _param(case: dict[str, Any]) -> Any:
    marks = [pytest.mark.real] if case["model"] == "real" else []
    return pytest.param(case, id=case["name"], marks=marks)


def test_every_case_has_a_golden_record() -> None:
    assert sorted(EXPECTED) == sorted(c["name"] for c in CASES)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_compress_equals_the_golden_record(case: dict[str, Any]) -> None:
    assert_matches(compute(case), EXPECTED[case["name"]])
