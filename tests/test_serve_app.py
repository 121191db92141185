"""The service's app through FastAPI's test client: schema, results equal to the library's, errors, metrics."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from gemfilter_rag import CompressionResult, GemFilterCompressor
from gemfilter_rag.serve import ServeSettings, create_app
from gemfilter_rag.serve.schema import response_model
from gemfilter_rag.serve.testing import without_timings

DOCS = [
    "Cities send messages. New York tells you that you should make more money.",
    "",
    "Startups in 2005 could be started for far less money than in 1995. Servers were cheaper.",
    "Dr. Smith said the results were good. The question was whether it would still work.",
]
QUERY = "What does New York tell you?"


@pytest.fixture(scope="module")
def comp() -> GemFilterCompressor:
    from tinymodels import build_model, build_tokenizer

    return GemFilterCompressor(build_model("llama"), build_tokenizer(), filter_layer=2)


@pytest.fixture
def client(comp: GemFilterCompressor) -> Iterator[TestClient]:
    with TestClient(create_app(comp, ServeSettings(max_wait_ms=0))) as c:
        yield c


def metrics(client: TestClient) -> dict[str, float]:
    """Every sample of /metrics as {"name{label=value}": value}."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def test_openapi_documents_the_request_the_result_and_the_errors(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/v1/compress"]["post"]
    request = op["requestBody"]["content"]["application/json"]["schema"]
    assert set(request["properties"]) == {"documents", "query", "top_k", "document_scores", "options"}
    assert set(request["required"]) == {"documents", "query"}
    assert all(p.get("description") for p in request["properties"].values())
    ref = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    result = spec["components"]["schemas"][ref.split("/")[-1]]
    fields = {f.name for f in dataclasses.fields(CompressionResult)} - {"details"}
    assert set(result["properties"]) == fields | {"ratio"}  # generated from the dataclass: new fields follow
    doc = spec["components"]["schemas"]["DocumentResult"]
    assert {"text", "spans", "kept_tokens", "score_share"} <= set(doc["properties"])
    for status in ("413", "422", "429", "503"):
        assert op["responses"][status]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorResponse")
    assert {"/health", "/metrics"} <= set(spec["paths"])


@pytest.mark.parametrize(
    "request_options",
    [
        {"top_k": 12},
        {"top_k": 9, "options": {"granularity": "token"}},
        {"top_k": 20, "document_scores": [0.9, 0.1, 0.5, 0.2]},
        {"top_k": 10_000},  # fits: no filter pass, everything kept
        {},  # the server's default budget
    ],
)
def test_the_answer_is_the_library_result(
    client: TestClient, comp: GemFilterCompressor, request_options: dict[str, Any]
) -> None:
    response = client.post("/v1/compress", json={"documents": DOCS, "query": QUERY, **request_options})
    assert response.status_code == 200, response.text
    data = response.json()
    response_model().model_validate(data)  # the published schema holds
    local_options = dict(request_options.get("options", {}))
    local = comp.with_options(**local_options).compress(
        DOCS, QUERY, top_k=request_options.get("top_k"), document_scores=request_options.get("document_scores")
    )
    remote = CompressionResult.from_dict(data)
    assert without_timings(remote) == without_timings(local)
    assert data["ratio"] == pytest.approx(local.ratio)
    assert set(data["timings"]) >= {"tokenize", "filter", "select", "total", "queue"}


def _library_error(comp: GemFilterCompressor, body: dict[str, Any]) -> Exception:
    try:
        c = comp.with_options(**body.get("options", {}))
        c.compress(
            body.get("documents"),  # type: ignore[arg-type]
            body.get("query"),  # type: ignore[arg-type]
            top_k=body.get("top_k"),
            document_scores=body.get("document_scores"),
        )
    except (TypeError, ValueError) as err:
        return err
    raise AssertionError(f"the library accepted {body}")


LIBRARY_ERRORS: list[tuple[dict[str, Any], str]] = [
    ({"documents": "one text", "query": QUERY}, "documents"),
    ({"documents": ["ok", 7], "query": QUERY}, "documents[1]"),
    ({"documents": {"a": 1}, "query": QUERY}, "documents"),
    ({"documents": DOCS, "query": ""}, "query"),
    ({"documents": DOCS, "query": "   "}, "query"),
    ({"documents": DOCS, "query": None}, "query"),
    ({"documents": DOCS, "query": 42}, "query"),
    ({"documents": DOCS, "query": QUERY, "top_k": 0}, "top_k"),
    ({"documents": DOCS, "query": QUERY, "top_k": 1.5}, "top_k"),
    ({"documents": DOCS, "query": QUERY, "top_k": True}, "top_k"),
    ({"documents": DOCS, "query": QUERY, "top_k": "256"}, "top_k"),
    ({"documents": DOCS, "query": QUERY, "document_scores": [1.0]}, "document_scores"),
    ({"documents": DOCS, "query": QUERY, "document_scores": [1, 2, "x", 4]}, "document_scores[2]"),
    ({"documents": DOCS, "query": QUERY, "options": {"granularity": "words"}}, "options.granularity"),
    ({"documents": DOCS, "query": QUERY, "options": {"topk": 5}}, "options"),
    ({"documents": DOCS, "query": QUERY, "options": {"filter_layer": 99}}, "options.filter_layer"),
]


@pytest.mark.parametrize(("body", "field"), LIBRARY_ERRORS)
def test_bad_requests_get_the_library_message(
    client: TestClient, comp: GemFilterCompressor, body: dict[str, Any], field: str
) -> None:
    expected = _library_error(comp, body)
    response = client.post("/v1/compress", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["kind"] == "validation"
    assert error["message"] == str(expected)
    assert error["exception"] == type(expected).__name__
    assert error["field"] == field


def test_non_finite_scores_get_the_library_message(client: TestClient, comp: GemFilterCompressor) -> None:
    # JSON has no NaN, but Python's json (and many clients) write it; the library's check answers
    body = '{"documents": ["a", "b"], "query": "q", "document_scores": [NaN, 1]}'
    response = client.post("/v1/compress", content=body, headers={"content-type": "application/json"})
    expected = _library_error(comp, {"documents": ["a", "b"], "query": "q", "document_scores": [float("nan"), 1]})
    assert response.status_code == 422 and response.json()["error"]["message"] == str(expected)


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (b'{"documents": ["a"], "query": ', "body", "not valid JSON"),
        (b"\xff\xfe not utf-8", "body", "not valid JSON"),
        (b"[1, 2]", "body", "JSON object"),
        (b'"just a string"', "body", "JSON object"),
        (b'{"documents": ["a"]}', "query", "is required"),
        (b'{"query": "q"}', "documents", "is required"),
        (b'{"documents": ["a"], "query": "q", "topk": 5}', "topk", "valid fields"),
        (b'{"documents": ["a"], "query": "q", "options": [1]}', "options", "expected an object"),
        (b'{"documents": ["a"], "query": "q", "document_scores": 3}', "document_scores", "array of numbers"),
        (b"", "body", "not valid JSON"),
        (b"[" * 200_000 + b"]" * 200_000, "body", "not valid JSON"),  # nested past Python's recursion limit
    ],
)
def test_malformed_requests_name_the_field_and_the_fix(client: TestClient, body: bytes, field: str, words: str) -> None:
    response = client.post("/v1/compress", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == field and error["message"].startswith(f"{field}: ") and words in error["message"]


def test_limits_answer_413_naming_the_field_and_the_limit(comp: GemFilterCompressor) -> None:
    settings = ServeSettings(max_request_bytes=2_000, max_documents=3, max_context_tokens=40, max_wait_ms=0)
    with TestClient(create_app(comp, settings)) as client:
        too_big = client.post("/v1/compress", json={"documents": ["x" * 3_000], "query": QUERY})
        too_many = client.post("/v1/compress", json={"documents": ["a", "b", "c", "d"], "query": QUERY})
        too_long = client.post("/v1/compress", json={"documents": [DOCS[0], DOCS[2], DOCS[3]], "query": QUERY})
        at_limits = client.post("/v1/compress", json={"documents": ["a", "b", "c"], "query": QUERY})
        counts = metrics(client)
    for response, field, limit in ((too_big, "body", 2_000), (too_many, "documents", 3), (too_long, "documents", 40)):
        assert response.status_code == 413, response.text
        error = response.json()["error"]
        assert (error["kind"], error["field"], error["limit"]) == ("too_large", field, limit)
        assert str(limit) in error["message"] and "--max-" in error["message"]
    assert at_limits.status_code == 200
    assert counts["gemfilter_errors_total{kind=too_large,route=/v1/compress}"] == 3
    assert counts["gemfilter_requests_total{route=/v1/compress,status=413}"] == 3


def test_a_chunked_body_past_the_limit_is_cut_off(comp: GemFilterCompressor) -> None:
    settings = ServeSettings(max_request_bytes=1_000, max_wait_ms=0)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server counts while it reads
        yield b'{"documents": ["'
        for _ in range(50):
            yield b"y" * 100
        yield b'"], "query": "q"}'

    with TestClient(create_app(comp, settings)) as client:
        response = client.post("/v1/compress", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["field"] == "body"


def test_metrics_count_what_happened(client: TestClient, comp: GemFilterCompressor) -> None:
    ok = [client.post("/v1/compress", json={"documents": DOCS, "query": QUERY, "top_k": k}) for k in (8, 12, 16)]
    bad = [client.post("/v1/compress", json={"documents": DOCS, "query": ""}) for _ in range(2)]
    junk = client.post("/v1/compress", content=b"{", headers={"content-type": "application/json"})
    assert [r.status_code for r in ok] == [200] * 3 and [r.status_code for r in bad] == [422] * 2
    assert junk.status_code == 422
    m = metrics(client)
    assert m["gemfilter_requests_total{route=/v1/compress,status=200}"] == 3
    assert m["gemfilter_requests_total{route=/v1/compress,status=422}"] == 3
    assert m["gemfilter_errors_total{kind=validation,route=/v1/compress}"] == 2
    assert m["gemfilter_errors_total{kind=bad_json,route=/v1/compress}"] == 1
    assert m["gemfilter_errors_total{kind=queue_full,route=/v1/compress}"] == 0
    assert m["gemfilter_batch_size_count"] == 3 and m["gemfilter_batch_size_sum"] == 3
    assert m["gemfilter_queue_wait_seconds_count"] == 3 and m["gemfilter_compute_seconds_count"] == 3
    results = [r.json() for r in ok]
    assert m["gemfilter_context_tokens_total"] == sum(r["original_tokens"] for r in results)
    assert m["gemfilter_kept_tokens_total"] == sum(r["compressed_tokens"] for r in results)
    assert m["gemfilter_queue_depth"] == 0 and m["gemfilter_in_flight"] == 0


def test_health(client: TestClient, comp: GemFilterCompressor) -> None:
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["model_loaded"] is True
    assert body["filter_layer"] == comp.filter_layer and body["queue_depth"] == 0
    assert body["model"] == type(comp.model).__name__


def test_empty_documents_and_an_empty_list(client: TestClient, comp: GemFilterCompressor) -> None:
    for docs in ([], ["", "  "]):
        response = client.post("/v1/compress", json={"documents": docs, "query": QUERY})
        assert response.status_code == 200
        assert without_timings(CompressionResult.from_dict(response.json())) == without_timings(
            comp.compress(docs, QUERY)
        )


def test_create_app_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match="compressor"):
        create_app("not a compressor")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_batch"):
        ServeSettings(max_batch=0)
    with pytest.raises(ValueError, match="max_wait_ms"):
        ServeSettings(max_wait_ms=float("nan"))
    with pytest.raises(TypeError, match="unknown setting"):
        ServeSettings.from_mapping({"max_bach": "3"})
    assert ServeSettings.from_mapping({"max_batch": "3", "max_wait_ms": "2.5"}) == ServeSettings(
        max_batch=3, max_wait_ms=2.5
    )
