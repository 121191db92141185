"""The fixed inputs of the golden test and how each is computed (``compute``), shared by the test and
by ``python tests/golden_cases.py``, which writes ``tests/golden/compress.json``.

Each case builds a compressor from a tiny model (or the real default), compresses fixed documents and
records what ``compress`` returned: the kept token indices, each document's spans and score share, the
per-token scores, and (for ``generate`` cases) the answer's token ids. The file was written before the
core was reorganised into capture / FilterModel / scorers / pipeline; the test holds every later commit
to it (spans exactly, scores to 1e-5).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from tinymodels import ARCHS, SEED, TRAINING_TEXT, build_model, build_tokenizer, model_config  # noqa: E402

GOLDEN = HERE / "golden" / "compress.json"
DOCS = [p.replace("\n", " ") for p in TRAINING_TEXT.split("\n\n")]
QUERY = "What does Cambridge tell you?"
SCORES = [0.2, 0.9, 0.4, 0.3, 0.1]
LAYER = 2
HEADS = 4


def fake_embeddings(texts: list[str]) -> list[list[float]]:
    """A deterministic bag-of-letters embedding."""
    return [[t.lower().count(c) + 0.01 for c in "aeiou cmbrdg"] for t in texts]


def tiny_readouts(seed: int = 0) -> Any:
    from gemfilter_rag.readout import Readout, ReadoutSet, variant_extras

    g = torch.Generator().manual_seed(seed)
    variants = {}
    for name in ("attention", "attention+retriever", "attention+embedding", "attention+embedding+retriever"):
        extras = variant_extras(name)
        w = torch.randn(3 * (LAYER + 1) * HEADS + len(extras), generator=g, dtype=torch.float64)
        variants[name] = Readout(LAYER, HEADS, extras, tuple(w.tolist()), 0.1)
    return ReadoutSet(LAYER, HEADS, variants, {"test": True})


def _short_model(arch: str) -> Any:
    """The tiny model with only 160 positions, so that the documents need windows."""
    from transformers import AutoModelForCausalLM

    cfg = model_config(arch, len(build_tokenizer()))
    cfg.max_position_embeddings = 160
    torch.manual_seed(SEED)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").float().eval()


def _compressor(case: dict[str, Any]) -> Any:
    from gemfilter_rag import GemFilterCompressor, ScoringConfig
    from gemfilter_rag.profiles import Profile, fingerprint

    options = dict(case.get("options", {}))
    if options.pop("paper", False):
        options["scoring"] = ScoringConfig.paper()
    if case["model"] == "real":
        return GemFilterCompressor.from_pretrained(
            case.get("shipped"), device="cpu", embeddings=case.get("embeddings", "auto"), **options
        )
    model = _short_model(case["model"]) if case.get("short") else build_model(case["model"])
    embeddings = fake_embeddings if case.get("embeddings") == "fake" else None
    if case.get("readout"):
        sets = tiny_readouts()
        profile = Profile("tiny", fingerprint(model.config), {"filter_layer": sets.layer}, readout=sets.to_dict())
        return GemFilterCompressor(model, build_tokenizer(), profile=profile, embeddings=embeddings, **options)
    return GemFilterCompressor(model, build_tokenizer(), embeddings=embeddings, **options)


def cases() -> list[dict[str, Any]]:
    """Every golden case: tiny models of each architecture, then the real default model."""
    out: list[dict[str, Any]] = []
    for arch in ARCHS:
        out += [
            {"name": f"{arch}-layer-sentence", "model": arch, "options": {"filter_layer": 1}, "top_k": 40},
            {"name": f"{arch}-layer-token", "model": arch, "options": {"granularity": "token"}, "top_k": 30},
            {"name": f"{arch}-layer-document", "model": arch, "options": {"granularity": "document"}, "top_k": 90},
            {"name": f"{arch}-paper", "model": arch, "options": {"paper": True, "granularity": "token"}, "top_k": 30},
            {"name": f"{arch}-prior-add", "model": arch, "options": {}, "top_k": 40, "scores": True},
            {"name": f"{arch}-prior-share", "model": arch, "options": {"prior": "share"}, "top_k": 40, "scores": True},
            {"name": f"{arch}-readout", "model": arch, "readout": True, "top_k": 30},
            {
                "name": f"{arch}-readout-token",
                "model": arch,
                "readout": True,
                "options": {"granularity": "token"},
                "top_k": 30,
            },
            {
                "name": f"{arch}-readout-retriever-emb",
                "model": arch,
                "readout": True,
                "embeddings": "fake",
                "top_k": 30,
                "scores": True,
            },
        ]
    out += [
        {"name": "llama-windows-layer", "model": "llama", "short": True, "top_k": 30},
        {"name": "llama-windows-readout", "model": "llama", "short": True, "readout": True, "top_k": 30},
        {
            "name": "llama-windows-readout-emb",
            "model": "llama",
            "short": True,
            "readout": True,
            "embeddings": "fake",
            "top_k": 30,
        },
        {"name": "llama-generate", "model": "llama", "top_k": 40, "generate": True},
        {"name": "llama-readout-generate", "model": "llama", "readout": True, "top_k": 40, "generate": True},
    ]
    out += [
        {"name": "real-default", "model": "real", "top_k": 64},
        {"name": "real-default-scores", "model": "real", "top_k": 64, "scores": True},
        {"name": "real-attention-only", "model": "real", "embeddings": None, "top_k": 64},
        {"name": "real-layer", "model": "real", "embeddings": None, "options": {"scorer": "layer"}, "top_k": 64},
        # the default up to 0.1 stays loadable and gives what it gave (recorded as real-default before 0.2)
        {"name": "real-previous", "model": "real", "shipped": "smollm2-previous", "top_k": 64},
        {"name": "real-previous-scores", "model": "real", "shipped": "smollm2-previous", "top_k": 64, "scores": True},
    ]
    return out


def compute(case: dict[str, Any]) -> dict[str, Any]:
    """What ``compress`` (and ``generate``) return for one case, as plain JSON values."""
    comp = _compressor(case)
    scores = SCORES if case.get("scores") else None
    if case.get("generate"):
        gen = comp.generate(DOCS, QUERY, top_k=case["top_k"], max_new_tokens=6)
        res, answer = gen.compression, gen.token_ids
    else:
        res, answer = comp.compress(DOCS, QUERY, top_k=case["top_k"], document_scores=scores), None
    token_scores = res.details.get("scores")
    return {
        "kept": list(res.kept_token_indices),
        "text": res.text,
        "filter_layer": res.filter_layer,
        "documents": [{"spans": [list(s) for s in d.spans], "share": d.score_share} for d in res.documents],
        "scores": [float(x) for x in token_scores] if token_scores is not None else None,
        "answer": answer,
    }


def assert_matches(found: dict[str, Any], expected: dict[str, Any], tol: float = 1e-5) -> None:
    """Spans, kept tokens and answers exactly; scores and shares to ``tol``."""
    for key in ("kept", "text", "filter_layer", "answer"):
        assert found[key] == expected[key], key
    assert [d["spans"] for d in found["documents"]] == [d["spans"] for d in expected["documents"]]
    for a, b in zip(found["documents"], expected["documents"], strict=True):
        assert abs(a["share"] - b["share"]) <= tol
    assert (found["scores"] is None) == (expected["scores"] is None)
    if expected["scores"] is not None:
        got, want = torch.tensor(found["scores"]), torch.tensor(expected["scores"])
        assert got.shape == want.shape
        # float32 sums differ in their last bits between CPUs (kernel choice): tolerate tol of the scores' scale
        scale = max(1.0, float(want.abs().max())) if want.numel() else 1.0
        assert torch.allclose(got, want, rtol=tol, atol=tol * scale), float((got - want).abs().max())


if __name__ == "__main__":
    GOLDEN.parent.mkdir(exist_ok=True)
    done = {c["name"]: compute(c) for c in cases()}
    GOLDEN.write_text(json.dumps(done, indent=1) + "\n")
    print(f"wrote {len(done)} cases to {GOLDEN}")
