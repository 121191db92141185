"""Fit and judge readouts: L2 logistic regression over unit features, cross-validated by question.

The judgement is what a user sees: at a token budget, does the text the readout keeps still hold
an accepted answer (``answer kept``), and does it keep every labelled unit (``positives kept``).
Rates are averaged per source and then across sources, so that each kind of context counts alike.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..answers import contains_answer
from ..features import BLOCKS_V1, block_features, relative_scores, slice_layers
from ..readout import Readout, variant_extras
from ..selection import select_ranked
from .extract import ExampleFeatures


@dataclass(frozen=True)
class Design:
    """The features (U, F) and labels (U,) of one example for one layer and variant."""

    x: torch.Tensor
    y: torch.Tensor
    example: ExampleFeatures


def design(
    examples: Sequence[ExampleFeatures], layer: int, variant: str, blocks: Sequence[str] = BLOCKS_V1
) -> list[Design]:
    """Feature matrices of every example, exactly as ``features.unit_features`` builds them at inference."""
    extras = variant_extras(variant)
    out = []
    for ex in examples:
        raw = slice_layers(ex.raw, ex.heads, layer + 1)  # blocks of layers 0..layer
        retriever = relative_scores(ex.sim_doc.tolist()) if "retriever" in extras and ex.sim_doc is not None else None
        embed = "sim_unit" in extras
        if ("retriever" in extras or embed) and ex.sim_doc is None:
            raise ValueError(f"variant {variant!r}: the examples were extracted without an embedding model.")
        x, names = block_features(
            raw,
            blocks,
            ex.units,
            ex.n_context,
            ex.unit_docs,
            retriever,
            ex.sim_unit if embed else None,
            ex.sim_doc if embed else None,
        )
        if names != extras:  # pragma: no cover - combine and variant_extras agree by construction
            raise AssertionError((names, extras))
        out.append(Design(x.double(), ex.labels.double(), ex))
    return out


def row_weights(y: torch.Tensor) -> torch.Tensor:
    """Per-example balance: the positives share half the example's weight, the negatives the other half."""
    pos = float(y.sum())
    neg = float(y.numel()) - pos
    return torch.where(y > 0, 0.5 / max(pos, 1.0), 0.5 / max(neg, 1.0))


def fit_logistic(designs: Sequence[Design], l2: float) -> tuple[torch.Tensor, float]:
    """L2-regularised logistic regression (L-BFGS, float64, deterministic). Returns (weights (F,), bias)."""
    usable = [d for d in designs if 0 < float(d.y.sum()) < d.y.numel()]
    if not usable:
        raise ValueError("examples: none has both positive and negative units; nothing to learn from.")
    x = torch.cat([d.x for d in usable])  # (R, F)
    y = torch.cat([d.y for d in usable])  # (R,)
    w_rows = torch.cat([row_weights(d.y) for d in usable])  # (R,)
    w_rows = w_rows / w_rows.sum()
    params = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([params], lr=1.0, max_iter=500, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        z = x @ params[:-1] + params[-1]
        loss = (w_rows * F.binary_cross_entropy_with_logits(z, y, reduction="none")).sum()
        loss = loss + l2 * (params[:-1] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    found = params.detach()
    return found[:-1].clone(), float(found[-1])


def outcome(d: Design, weights: torch.Tensor, bias: float, budget: int) -> tuple[bool, bool]:
    """(answer kept, every positive unit kept) when the readout selects units within ``budget`` tokens."""
    logits = d.x @ weights + bias  # (U,)
    kept = select_ranked(logits, d.example.units, budget)
    kept_set = set(kept.tolist())
    chosen = [i for i, (a, _) in enumerate(d.example.units) if a in kept_set]
    text = " ".join(d.example.texts[i] for i in chosen)
    positives = [i for i in range(len(d.example.units)) if bool(d.y[i])]
    return contains_answer(text, d.example.answers), all(i in chosen for i in positives)


def macro(rows: Sequence[tuple[str, bool]]) -> dict[str, float]:
    """Rate per source and their mean (``"all"``)."""
    by: dict[str, list[bool]] = {}
    for source, ok in rows:
        by.setdefault(source, []).append(ok)
    rates = {s: sum(v) / len(v) for s, v in sorted(by.items())}
    rates["all"] = sum(rates.values()) / len(rates) if rates else 0.0
    return rates


def cross_validate(
    examples: Sequence[ExampleFeatures],
    layer: int,
    variant: str,
    l2: float,
    budget: int,
    folds: int = 5,
    seed: int = 0,
    blocks: Sequence[str] = BLOCKS_V1,
) -> dict[str, dict[str, float]]:
    """``folds``-fold cross-validation by question: answer-kept and positives-kept rates per source."""
    designs = design(examples, layer, variant, blocks)
    order = list(range(len(designs)))
    random.Random(seed).shuffle(order)
    answer: list[tuple[str, bool]] = []
    positive: list[tuple[str, bool]] = []
    for f in range(folds):
        held = set(order[f::folds])
        w, b = fit_logistic([d for i, d in enumerate(designs) if i not in held], l2)
        for i in sorted(held):
            a, p = outcome(designs[i], w, b, budget)
            answer.append((designs[i].example.source, a))
            positive.append((designs[i].example.source, p))
    return {"answer_kept": macro(answer), "positives_kept": macro(positive)}


def fit_readout(
    examples: Sequence[ExampleFeatures], layer: int, variant: str, l2: float, blocks: Sequence[str] = BLOCKS_V1
) -> Readout:
    """The readout of ``variant`` at ``layer`` over ``blocks``, fitted on every example."""
    w, b = fit_logistic(design(examples, layer, variant, blocks), l2)
    heads = examples[0].heads
    return Readout(layer, heads, variant_extras(variant), tuple(float(v) for v in w), b, tuple(blocks))
