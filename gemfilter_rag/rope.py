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
    c, s = _pair_angles(cos, sin)  # (n, R/2): one angle per pair
    norm = (c * c + s * s).clamp_min(torch.finfo(torch.float32).tiny)  # (n, R/2)
    first = (a * c + b * s) / norm  # (..., n, R/2)
    second = (b * c - a * s) / norm  # (..., n, R/2)
    return torch.cat((first, second, rest), dim=-1).to(x.dtype)


def turn_between(
    cos_from: torch.Tensor, sin_from: torch.Tensor, cos_to: torch.Tensor, sin_to: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The one turn per pair that undoes ``cos_from``/``sin_from`` and applies ``cos_to``/``sin_to`` (n, R) each:
    (c, s), (n, R/2) each, with ``rotate``'s inverse folded in: ``c = (c1 c2 + s1 s2) / (c1^2 + s1^2)`` and
    ``s = (c1 s2 - s1 c2) / (c1^2 + s1^2)``. Applied with ``apply_turn``; the same for every layer that shares
    the tables, so it is computed once for all of them."""
    if cos_from.shape != cos_to.shape:
        raise ValueError(f"cos_from/cos_to: tables of {tuple(cos_from.shape)} and {tuple(cos_to.shape)} differ.")
    c1, s1 = _pair_angles(cos_from, sin_from)  # (n, R/2)
    c2, s2 = _pair_angles(cos_to, sin_to)  # (n, R/2)
    norm = (c1 * c1 + s1 * s1).clamp_min(torch.finfo(torch.float32).tiny)  # (n, R/2)
    return (c1 * c2 + s1 * s2) / norm, (c1 * s2 - s1 * c2) / norm


def apply_turn(keys: torch.Tensor, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Turn every pair of ``keys`` (..., n, D) by ``c``/``s`` (n, R/2) from ``turn_between``; the dimensions
    past R unchanged. Computed in float32, returned in ``keys``' dtype (a new tensor)."""
    return turn_(keys.float().clone() if keys.dtype == torch.float32 else keys.float(), c, s).to(keys.dtype)


def turn_(keys: torch.Tensor, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``apply_turn`` in place on float32 ``keys`` (..., n, D) (a view is turned where it lies); returns ``keys``."""
    r = 2 * int(c.shape[-1])
    if c.shape != s.shape or c.dim() != 2 or keys.shape[-2] != c.shape[0] or r > keys.shape[-1]:
        raise ValueError(
            f"keys: {tuple(keys.shape)} does not fit a turn of {tuple(c.shape)} (want (..., n, D), (n, R/2))."
        )
    if keys.dtype != torch.float32:
        raise ValueError(f"keys: turn_ works in place on float32 keys, got {keys.dtype}; use apply_turn.")
    a, b = _halves(keys[..., :r])  # (..., n, R/2) each, views
    c, s = c.float(), s.float()
    bs, as_ = b * s, a * s  # (..., n, R/2)
    a.mul_(c).sub_(bs)  # a c - b s
    b.mul_(c).add_(as_)  # b c + a s
    return keys


def rerotate(
    keys: torch.Tensor,
    cos_from: torch.Tensor,
    sin_from: torch.Tensor,
    cos_to: torch.Tensor,
    sin_to: torch.Tensor,
) -> torch.Tensor:
    """Move post-RoPE ``keys`` (..., n, D), computed at the positions of ``cos_from``/``sin_from`` (n, R), to
    the positions of ``cos_to``/``sin_to`` (n, R): exactly the keys the model computes there from the same
    pre-RoPE keys (within float32 rounding), in one turn per pair (``turn_between``). Returned in ``keys``'
    dtype."""
    _check(keys, cos_from, sin_from)
    _check(keys, cos_to, sin_to)
    return apply_turn(keys, *turn_between(cos_from, sin_from, cos_to, sin_to))


def _pair_angles(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (n, R/2) cos and sin of each pair from half-split tables (n, R), after checking that layout."""
    c, s = _halves(cos.float())[0], _halves(sin.float())[0]  # (n, R/2): one angle per pair
    halves_agree = torch.equal(cos.float(), torch.cat((c, c), dim=-1)) and torch.equal(
        sin.float(), torch.cat((s, s), dim=-1)
    )
    if not halves_agree:
        raise ValueError(
            "cos/sin: the two halves differ; these tables are not the half-split (rotate_half) layout "
            "that rerotate supports."
        )
    return c, s


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
