"""Pure scoring functions: from a layer's query/key to one relevance score per token.

Every function here is a plain function of tensors, with no model and no state, so each can be
tested against an independent computation. Shapes: B batch, H query heads, KV key/value heads,
Q scoring query rows, T sequence length, D head dimension.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import ScoringConfig


def _by_group(x: torch.Tensor, kv: int, what: str) -> torch.Tensor:
    """Query heads grouped by the key/value head they share (GQA): (B, H, ...) -> (B, KV, G, ...) in float32."""
    b, h = x.shape[:2]
    if h % kv:
        raise ValueError(f"query heads ({h}) must be a multiple of {what} heads ({kv})")
    return x.float().reshape(b, kv, h // kv, *x.shape[2:])


def query_logits(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """Raw dot products ``q . k`` of some query rows against every key, GQA keys repeated.

    query: (B, H, Q, D); key: (B, KV, T, D) with H a multiple of KV. Returns (B, H, Q, T).
    """
    grouped = _by_group(query, key.shape[1], "key")  # (B, KV, G, Q, D)
    return torch.einsum("bkgqd,bktd->bkgqt", grouped, key.float()).flatten(1, 2)  # (B, H, Q, T)


def visibility_mask(query_positions: torch.Tensor, seq_len: int, sliding_window: int | None = None) -> torch.Tensor:
    """Which keys each query row may attend to: causal, and within the sliding window if any.

    query_positions: (Q,) absolute positions. Returns a bool tensor (Q, T).
    """
    keys = torch.arange(seq_len, device=query_positions.device)  # (T,)
    pos = query_positions[:, None]  # (Q, 1)
    visible = keys[None, :] <= pos  # (Q, T)
    if sliding_window is not None:
        visible &= keys[None, :] > pos - sliding_window
    return visible


def attention_probs(logits: torch.Tensor, scaling: float, visible: torch.Tensor) -> torch.Tensor:
    """Softmax attention from logits (B, H, Q, T) with a (Q, T) visibility mask."""
    scaled = (logits * scaling).masked_fill(~visible, float("-inf"))
    return torch.softmax(scaled, dim=-1)  # (B, H, Q, T)


def aggregate(scores: torch.Tensor, heads: str) -> torch.Tensor:
    """Reduce (B, H, Q, T) to (B, T): sum over query rows, then sum or max over heads."""
    per_head = scores.sum(dim=2)  # (B, H, T)
    if heads == "sum":
        return per_head.sum(dim=1)
    if heads == "max":
        return per_head.amax(dim=1)
    raise ValueError(f"heads: unknown aggregation {heads!r}; use 'sum' or 'max'")


def pool(scores: torch.Tensor, kind: str, width: int) -> torch.Tensor:
    """Smooth (B, T) scores along T with a centred window of ``width`` (odd), same length out."""
    if kind == "none" or width <= 1:
        return scores
    x = scores[:, None, :]  # (B, 1, T)
    pad = width // 2
    if kind == "avg":
        # zero padding counted in, as torch's default and the paper's reference code do
        return F.avg_pool1d(x, width, stride=1, padding=pad)[:, 0, : scores.shape[1]]
    if kind == "max":
        return F.max_pool1d(x, width, stride=1, padding=pad)[:, 0, : scores.shape[1]]
    raise ValueError(f"pool: unknown pooling {kind!r}; use 'avg', 'max' or 'none'")


def token_scores(
    query: torch.Tensor,
    key: torch.Tensor,
    query_positions: torch.Tensor,
    config: ScoringConfig,
    scaling: float,
    sliding_window: int | None = None,
) -> torch.Tensor:
    """One score per token (B, T) from the scoring rows of a layer's query and all its keys.

    query: (B, H, Q, D), the rows at ``query_positions`` (Q,); key: (B, KV, T, D).
    """
    logits = query_logits(query, key)  # (B, H, Q, T)
    if config.softmax:
        scores = attention_probs(logits, scaling, visibility_mask(query_positions, key.shape[2], sliding_window))
    else:
        scores = logits
    return pool(aggregate(scores, config.heads), config.pool, config.pool_width)  # (B, T)


def row_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    query_positions: torch.Tensor,
    scaling: float,
    sliding_window: int | None = None,
) -> torch.Tensor:
    """Softmax attention of the scoring rows to every key, averaged over the rows, per head.

    query: (B, H, Q, D), the rows at ``query_positions`` (Q,); key: (B, KV, T, D). Returns (B, H, T):
    each head's attention from the question, as the model itself computes it at that layer.
    """
    visible = visibility_mask(query_positions, key.shape[2], sliding_window)  # (Q, T)
    return attention_probs(query_logits(query, key), scaling, visible).mean(dim=2)  # (B, H, T)


def attend(probs: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """The attention output of softmax weights ``probs`` (B, H, Q, T) over ``value`` (B, KV, T, D), GQA values
    repeated: (B, H, Q, D) in float32."""
    grouped = _by_group(probs, value.shape[1], "value")  # (B, KV, G, Q, T)
    return torch.einsum("bkgqt,bktd->bkgqd", grouped, value.float()).flatten(1, 2)  # (B, H, Q, D)


def token_similarity(states: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Cosine of every token's hidden state with the rows' mean, after unit-norming and centring.

    states: (T, d) hidden states of one prompt; rows: (Q,) positions of the question's rows. Each state
    is scaled to unit norm (so that a few tokens with huge activations do not dominate), the mean over
    the prompt is subtracted, and each token is compared with the mean of the rows. Returns (T,) in [-1, 1].
    """
    unit = states / states.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # (T, d)
    centred = unit - unit.mean(dim=0, keepdim=True)  # (T, d)
    question = centred[rows.to(states.device)].mean(dim=0)  # (d,)
    return F.cosine_similarity(centred, question[None], dim=-1, eps=1e-8).cpu()  # (T,)


def query_positions(length: int, query_start: int, query: str | int) -> torch.Tensor:
    """Positions of a ``length``-token prompt whose attention scores (``ScoringConfig.query``): the last
    token, the question (from ``query_start``) onward, or the last n. Returns (Q,)."""
    if query == "last":
        return torch.tensor([length - 1])
    if query == "question":
        return torch.arange(query_start, length)
    return torch.arange(max(0, length - int(query)), length)


def top_k_sorted(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` highest scores of a 1-D tensor, in ascending index order."""
    k = min(k, scores.shape[0])
    if k <= 0:
        return torch.empty(0, dtype=torch.long, device=scores.device)
    # stable tie-break: among equal scores the earlier token wins
    order = torch.argsort(scores, descending=True, stable=True)[:k]
    return torch.sort(order).values
