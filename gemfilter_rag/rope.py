"""Rotary position embedding as pure functions: rotate keys, undo it, and move keys to other positions.

A rotary model turns each key into ``k * cos + rotate_half(k) * sin`` (the half-split layout that
transformers' Llama, Qwen2, Mistral, Phi3 and Gemma3 use): dimension ``i`` and ``i + R/2`` of the first
``R`` dimensions (``R`` < D with a partial rotary factor) form one pair, turned by the angle of that
pair at that position and scaled by the model's ``attention_scaling`` (1 for plain RoPE). Each pair's
turn is a 2 x 2 matrix ``[[c, -s], [s, c]]``; its exact inverse is ``[[c, s], [-s, c]] / (c^2 + s^2)``,
so keys computed at one set of positions can be moved to another with the tables the model itself
uses (``capture.rotary_tables``), whatever its scaling: ``rerotate``. Values carry no position and are
never rotated. Nothing here knows a model; every function is one of tensors. Shapes: KV key heads,
n tokens, D head dimension, R rotated dimensions (even, R <= D).
"""

from __future__ import annotations

import torch


def _halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two halves of the last dimension: (..., R) -> (..., R/2) twice."""
    half = x.shape[-1] // 2
    return x[..., :half], x[..., half:]


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Apply the rotary turn of ``cos``/``sin`` (n, R) to ``x`` (..., n, D): ``x * cos + rotate_half(x) * sin``
    on the first R dimensions, the rest unchanged. Computed in float32, returned in ``x``'s dtype."""
    r = _check(x, cos, sin)
    xf = x.float()
    rot, rest = xf[..., :r], xf[..., r:]  # (..., n, R), (..., n, D - R)
    a, b = _halves(rot)  # (..., n, R/2) each
    c, s = cos.float(), sin.float()  # (n, R)
    turned = rot * c + torch.cat((-b, a), dim=-1) * s  # (..., n, R)
    return torch.cat((turned, rest), dim=-1).to(x.dtype)


def unrotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The exact inverse of ``rotate`` with the same tables: (..., n, D) rotated keys -> the keys before RoPE."""
    r = _check(x, cos, sin)
    xf = x.float()
    rot, rest = xf[..., :r], xf[..., r:]  # (..., n, R), (..., n, D - R)
    a, b = _halves(rot)  # (..., n, R/2)
    c, s = _halves(cos.float())[0], _halves(sin.float())[0]  # (n, R/2): one angle per pair
    if not (
        torch.equal(cos.float(), torch.cat((c, c), dim=-1)) and torch.equal(sin.float(), torch.cat((s, s), dim=-1))
    ):
        raise ValueError(
            "cos/sin: the two halves differ; these tables are not the half-split (rotate_half) layout "
            "that rerotate supports."
        )
    norm = (c * c + s * s).clamp_min(torch.finfo(torch.float32).tiny)  # (n, R/2)
    first = (a * c + b * s) / norm  # (..., n, R/2)
    second = (b * c - a * s) / norm  # (..., n, R/2)
    return torch.cat((first, second, rest), dim=-1).to(x.dtype)


def rerotate(
    keys: torch.Tensor,
    cos_from: torch.Tensor,
    sin_from: torch.Tensor,
    cos_to: torch.Tensor,
    sin_to: torch.Tensor,
) -> torch.Tensor:
    """Move post-RoPE ``keys`` (..., n, D), computed at the positions of ``cos_from``/``sin_from`` (n, R), to
    the positions of ``cos_to``/``sin_to`` (n, R): exactly the keys the model computes there from the same
    pre-RoPE keys (within float32 rounding). Returned in ``keys``' dtype."""
    base = unrotate(keys.float(), cos_from, sin_from)  # (..., n, D) float32
    return rotate(base, cos_to, sin_to).to(keys.dtype)


def _check(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> int:
    """The rotated width R, after checking the shapes of ``x`` (..., n, D) and the tables (n, R)."""
    if cos.shape != sin.shape or cos.dim() != 2:
        raise ValueError(
            f"cos/sin: expected two (n, R) tables of one shape, got {tuple(cos.shape)} and {tuple(sin.shape)}."
        )
    n, r = cos.shape
    if x.shape[-2] != n or r > x.shape[-1] or r % 2:
        raise ValueError(
            f"x: {tuple(x.shape)} does not fit tables of {n} positions and {r} rotated dimensions "
            "(want (..., n, D) with an even R <= D)."
        )
    return int(r)
