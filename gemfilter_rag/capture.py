"""Run a causal LM up to one layer's query/key projections, record what the question attends to, and stop.

This is the only module that touches transformers internals. It works through the public
``AttentionInterface``: every decoder layer of a transformers 5.x model calls
``ALL_ATTENTION_FUNCTIONS[config._attn_implementation](module, query, key, value, ...)`` with
the post-RoPE (and post q/k-norm) query and key. We register one dispatcher per base
implementation (``"gemfilter+sdpa"`` delegates to ``"sdpa"``, and so on), switch the model's
config to it for the duration of a pass, capture the query/key of the filter layer, and raise
to leave the forward early. Layers after the filter layer never run, and the filter layer's own
attention is never computed.

The dispatcher delegates to the base implementation whenever the calling thread (or task) has
no capture armed for that module, so other threads that use the same model meanwhile (say, for
generation) see the model exactly as configured.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from .scoring import attend, attention_probs, query_logits, row_attention, token_similarity, visibility_mask

_PREFIX = "gemfilter+"


@dataclass(frozen=True)
class LayerCapture:
    """Post-RoPE query and key of the filter layer, as its attention function received them."""

    query: torch.Tensor  # (B, H, T, D)
    key: torch.Tensor  # (B, KV, T, D)
    scaling: float
    sliding_window: int | None
    value: torch.Tensor | None = None  # (B, KV, T, D): the layer's values, when the pass keeps them
    probs: torch.Tensor | None = None  # (B, H, N, T): every live row's attention, when the pass computed it


class _StopForward(Exception):
    """Raised inside the filter layer's attention to leave the model's forward."""

    def __init__(self, capture: LayerCapture) -> None:
        super().__init__("gemfilter early exit")
        self.capture = capture


@dataclass(frozen=True)
class _Armed:
    target_ids: frozenset[int]  # ids of the filter layer's modules (the layer to stop in)
    record: dict[int, int] | None = None  # id(module) -> layer index, for layers captured on the way
    captured: dict[int, LayerCapture] | None = None  # layer index -> capture, filled during the pass
    observe: Callable[[int, LayerCapture], None] | None = None  # called instead of keeping the capture
    values: bool = False  # keep each layer's values in its capture too
    live: torch.Tensor | None = None  # (N,) positions of every query row: recorded layers attend here (_attend)


FUSED_WEIGHTS = 1 << 20
"""Most live rows x keys for which the cached pass computes a recorded layer's attention itself, once for its
output and its record (4 MiB of float32 weights per head); longer ones go through the model's attention and
the record's rows are computed beside it."""

_ARMED: contextvars.ContextVar[_Armed | None] = contextvars.ContextVar("gemfilter_armed", default=None)
_LOCK = threading.RLock()
_ACTIVE_PASSES: dict[int, tuple[int, str]] = {}  # id(config) -> (passes in flight, original name)


_LAYERS: weakref.WeakKeyDictionary[nn.Module, nn.ModuleList] = weakref.WeakKeyDictionary()


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """Return the model's list of decoder layers, or raise a ValueError that says why not (found once per
    model object: the search walks every module)."""
    found = _LAYERS.get(model)
    if found is not None:
        return found
    layers = _find_decoder_layers(model)
    _LAYERS[model] = layers
    return layers


def _find_decoder_layers(model: nn.Module) -> nn.ModuleList:
    config = getattr(model, "config", None)
    text_config = config.get_text_config() if config is not None and hasattr(config, "get_text_config") else config
    n_layers = getattr(text_config, "num_hidden_layers", None)
    if getattr(text_config, "is_encoder_decoder", False) or not _is_causal_lm(model):
        raise ValueError(
            f"model: {type(model).__name__} is not a decoder-only causal LM; GemFilter needs one "
            "(load it with AutoModelForCausalLM)."
        )
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and n_layers and len(module) == n_layers:
            if all(_has_attention(layer) for layer in module):
                if any(getattr(m, "is_causal", True) is False for m in module.modules()):
                    raise ValueError(
                        f"model: {type(model).__name__} attends in both directions (an encoder such as BERT, "
                        "or a bidirectional embedding model); GemFilter needs a causal decoder-only LM."
                    )
                return module
    raise ValueError(
        f"model: could not find the decoder layers of {type(model).__name__} (a ModuleList of "
        f"{n_layers} layers, each with an attention module); GemFilter supports transformers "
        "decoder-only models whose attention goes through AttentionInterface."
    )


def _is_causal_lm(model: nn.Module) -> bool:
    can_generate = getattr(model, "can_generate", None)
    return bool(can_generate()) if callable(can_generate) else False


def _has_attention(layer: nn.Module) -> bool:
    return any(
        hasattr(m, "layer_idx") and ("attn" in n.lower() or "attention" in n.lower()) for n, m in layer.named_modules()
    )


def _dispatcher(base: str) -> Callable[..., Any]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    def attention(
        module: nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        **kwargs: Any,
    ) -> Any:
        armed = _ARMED.get()
        if armed is not None and (
            id(module) in armed.target_ids or (armed.record is not None and id(module) in armed.record)
        ):
            scaling = kwargs.get("scaling")
            if scaling is None:
                scaling = query.shape[-1] ** -0.5
            capture = LayerCapture(
                query.detach(),
                key.detach(),
                float(scaling),
                kwargs.get("sliding_window"),
                value.detach() if armed.values else None,
            )
            if id(module) in armed.target_ids:
                raise _StopForward(capture)
            assert armed.record is not None
            if armed.observe is not None and armed.live is not None and _attends_plainly(module, kwargs):
                probs, out = _attend(query, key, value, armed.live, capture)
                armed.observe(armed.record[id(module)], replace(capture, probs=probs))
                return out, None
            if armed.observe is not None:
                armed.observe(armed.record[id(module)], capture)
            else:
                assert armed.captured is not None
                armed.captured[armed.record[id(module)]] = capture
        if base == "eager":
            fn = _eager_for(module)
        else:
            fn = ALL_ATTENTION_FUNCTIONS.get(base, sdpa_attention_forward)
        return fn(module, query, key, value, attention_mask, **kwargs)

    return attention


def _attends_plainly(module: nn.Module, kwargs: dict[str, Any]) -> bool:
    """Whether the layer's attention is plain softmax attention that ``_attend`` computes exactly: no logit
    soft-capping, no attention sinks, no dropout (a model in eval mode), causal."""
    config = getattr(module, "config", None)
    return (
        getattr(config, "attn_logit_softcapping", None) is None
        and getattr(module, "sinks", None) is None
        and getattr(module, "is_causal", True)
        and not kwargs.get("dropout")
        and kwargs.get("softcap") is None
        and kwargs.get("s_aux") is None
    )


def _attend(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, live: torch.Tensor, cap: LayerCapture
) -> tuple[torch.Tensor, torch.Tensor]:
    """A recorded layer's attention computed once, for the output and the record alike: (probs (1, H, N, T),
    output (1, N, H, D) as attention functions return it). ``query`` (1, H, N, D) holds the rows at positions
    ``live`` (N,), ``key``/``value`` (1, KV, T, D) every key up to them; causal (and sliding-window) as the
    model's own mask for one unpadded sequence."""
    visible = visibility_mask(live.to(query.device), key.shape[2], cap.sliding_window)  # (N, T)
    probs = attention_probs(query_logits(query, key), cap.scaling, visible)  # (1, H, N, T)
    out = attend(probs, value)  # (1, H, N, D)
    return probs, out.to(query.dtype).transpose(1, 2).contiguous()


def _eager_for(module: nn.Module) -> Callable[..., Any]:
    """The model's own eager attention (it lives in the model's module, not in the registry)."""
    import sys

    fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if fn is None:
        raise ValueError(
            f"model: {type(module).__name__} has no eager_attention_forward; use attn_implementation='sdpa'."
        )
    return fn  # type: ignore[no-any-return]


def _ensure_registered(base: str) -> str:
    """Register the dispatcher for ``base`` (once, lazily) and return its name."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

    name = _PREFIX + base
    with _LOCK:
        if name not in ALL_ATTENTION_FUNCTIONS:
            AttentionInterface.register(name, _dispatcher(base))
            # The mask must be built exactly as for the base implementation (sdpa may skip it,
            # flash attention wants none, sliding-window layers need theirs).
            if base not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
                raise ValueError(
                    f"model: attention implementation {base!r} has no mask function; "
                    "load the model with attn_implementation='sdpa' or 'eager'."
                )
            AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[base])
    return name


_CONFIGS: weakref.WeakKeyDictionary[nn.Module, list[Any]] = weakref.WeakKeyDictionary()


def _configs(model: nn.Module) -> list[Any]:
    """Every distinct config object in the model (sub-models may hold their own), found once per model."""
    found = _CONFIGS.get(model)
    if found is None:
        found = _CONFIGS[model] = _find_configs(model)
    return found


def _find_configs(model: nn.Module) -> list[Any]:
    seen: dict[int, Any] = {}
    for module in model.modules():
        cfg = getattr(module, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation_internal"):
            seen.setdefault(id(cfg), cfg)
    return list(seen.values())


@contextmanager
def _routed(model: nn.Module) -> Iterator[None]:
    """Route the model's attention through the dispatcher while the block runs."""
    configs = _configs(model)
    with _LOCK:
        for cfg in configs:
            count, original = _ACTIVE_PASSES.get(id(cfg), (0, cfg._attn_implementation_internal))
            if count == 0:
                base = original or "sdpa"
                if base.startswith(_PREFIX):
                    base = base[len(_PREFIX) :]
                cfg._attn_implementation_internal = _ensure_registered(base)
            _ACTIVE_PASSES[id(cfg)] = (count + 1, original)
    try:
        yield
    finally:
        with _LOCK:
            for cfg in configs:
                count, original = _ACTIVE_PASSES[id(cfg)]
                if count == 1:
                    cfg._attn_implementation_internal = original
                    del _ACTIVE_PASSES[id(cfg)]
                else:
                    _ACTIVE_PASSES[id(cfg)] = (count - 1, original)


@torch.inference_mode()
def capture_layer(
    model: nn.Module,
    input_ids: torch.Tensor,
    layer: int,
    attention_mask: torch.Tensor | None = None,
    observe: Callable[[int, LayerCapture], None] | None = None,
) -> LayerCapture:
    """Run ``model`` on ``input_ids`` (B, T) through layer ``layer`` and return its query/key.

    Layers ``0..layer-1`` run in full with the model's configured attention; layer ``layer``
    runs up to its query/key projections (RoPE and any q/k norm applied); nothing after it runs.
    ``observe(i, capture)``, when given, is called with the query/key of every earlier layer ``i``
    as the pass goes (the readout reduces them to the question's attention there and then, so no
    layer's query/key outlives its own step).
    """
    layers = decoder_layers(model)
    if not 0 <= layer < len(layers):
        raise ValueError(f"filter_layer: {layer} is outside this model's layers; use 0..{len(layers) - 1}.")
    record = {id(m): i for i in range(layer) for m in layers[i].modules()} if observe is not None else None
    armed = _Armed(frozenset(id(m) for m in layers[layer].modules()), record, observe=observe)
    token = _ARMED.set(armed)
    try:
        with _routed(model):
            model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _StopForward as stop:
        return stop.capture
    finally:
        _ARMED.reset(token)
    raise RuntimeError(
        f"model: layer {layer} of {type(model).__name__} never called its attention function; "
        "this architecture does not route attention through transformers' AttentionInterface."
    )


@torch.inference_mode()
def capture_layers(
    model: nn.Module,
    input_ids: torch.Tensor,
    layers: Sequence[int],
    attention_mask: torch.Tensor | None = None,
    values: bool = False,
) -> dict[int, LayerCapture]:
    """Capture the query/key of several layers in one pass; stop inside the last of them.

    Returns ``{layer: LayerCapture}`` for every requested layer. Calibration uses this to score
    every layer of a probe with one forward pass instead of one per layer. With ``values`` each
    capture holds the layer's values too (``LayerCapture.value``): what the chunk cache stores.
    """
    all_layers = decoder_layers(model)
    wanted = sorted(set(int(i) for i in layers))
    if not wanted:
        raise ValueError("layers: is empty; pass at least one layer index.")
    bad = [i for i in wanted if not 0 <= i < len(all_layers)]
    if bad:
        raise ValueError(f"layers: {bad} outside this model's layers; use 0..{len(all_layers) - 1}.")
    last = wanted[-1]
    record = {id(m): i for i in wanted[:-1] for m in all_layers[i].modules()}
    captured: dict[int, LayerCapture] = {}
    armed = _Armed(frozenset(id(m) for m in all_layers[last].modules()), record, captured, values=values)
    token = _ARMED.set(armed)
    try:
        with _routed(model):
            model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _StopForward as stop:
        captured[last] = stop.capture
    finally:
        _ARMED.reset(token)
    missing = [i for i in wanted if i not in captured]
    if missing:
        raise RuntimeError(
            f"model: layers {missing} of {type(model).__name__} never called their attention function; "
            "this architecture does not route attention through transformers' AttentionInterface."
        )
    return captured


@dataclass(frozen=True)
class PassRecord:
    """What one filter pass recorded for one prompt of its batch."""

    query: torch.Tensor  # (1, H, Q, D): the scoring rows at the exit layer, post-RoPE
    key: torch.Tensor  # (1, KV, T, D): every key of the prompt at the exit layer
    rows: torch.Tensor  # (Q,) positions of the scoring rows
    scaling: float
    sliding_window: int | None
    attention: torch.Tensor | None  # (L, H, T): the rows' mean attention at layers 0..exit (None: not recorded)
    similarity: torch.Tensor | None = (
        None  # (L, T): each token's hidden state against the rows', at the input of layers 0..exit
    )
    key_attention: torch.Tensor | None = (
        None  # (L, H, T): the key rows' mean attention at layers 0..exit, as ``attention`` (None: not recorded)
    )


@contextmanager
def recording(
    model: nn.Module,
    exit_layer: int,
    rows: Sequence[torch.Tensor],
    lengths: Sequence[int],
    attention: bool,
    hidden: bool = False,
    key_rows: Sequence[torch.Tensor] | None = None,
) -> Iterator[list[PassRecord]]:
    """Arm one pass of ``model``: the forward run inside the block stops in layer ``exit_layer``.

    ``rows[i]`` (Q_i,) are the scoring positions of batch item ``i`` and ``lengths[i]`` its real length
    (right padding is sliced off). The yielded list is filled when the block ends: one ``PassRecord``
    per item, with the rows' attention at every layer ``0..exit_layer`` when ``attention`` is set
    (reduced per layer as the pass goes: (H, T) per item, never T x T). With ``hidden`` the hidden state
    entering each layer ``0..exit_layer`` is reduced, as it goes, to every token's similarity with the
    rows' (``scoring.token_similarity``, (T,) per item and layer): the filter model's own embedding of
    the question, at no extra cost. With ``key_rows`` (K_i,) per item (``attention`` needed), a second mean
    over those rows only is reduced the same way (``PassRecord.key_attention``): the question's rare-term
    tokens, say; an item with no key rows gets the rows' own attention there. The model is left as it was,
    whatever happens inside the block.
    """
    layers = decoder_layers(model)
    if not 0 <= exit_layer < len(layers):
        raise ValueError(f"filter_layer: {exit_layer} is outside this model's layers; use 0..{len(layers) - 1}.")
    if key_rows is not None and (not attention or len(key_rows) != len(rows)):
        raise ValueError("key_rows: need attention=True and one tensor of key rows per item (empty for none).")
    stacks: list[list[torch.Tensor]] = [[] for _ in rows]
    sims: list[list[torch.Tensor]] = [[] for _ in rows]
    keyed: list[list[torch.Tensor]] = [[] for _ in rows]

    def on_hidden(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        states = args[0] if args else kwargs.get("hidden_states")
        if not isinstance(states, torch.Tensor):
            raise RuntimeError(f"model: {type(model).__name__}'s decoder layers take no hidden_states tensor.")
        for i, r in enumerate(rows):
            sims[i].append(token_similarity(states[i, : lengths[i]].detach().float(), r))  # (T_i,)

    def observe(layer: int, cap: LayerCapture) -> None:
        for i, r in enumerate(rows):
            q = cap.query[i : i + 1, :, r]  # (1, H, Q, D)
            k = cap.key[i : i + 1, :, : lengths[i]]  # (1, KV, T_i, D)
            att = row_attention(q, k, r, cap.scaling, cap.sliding_window)[0].float()  # (H, T_i)
            stacks[i].append(att)
            if key_rows is not None:
                kr = key_rows[i]  # (K_i,)
                if kr.numel():
                    att = row_attention(cap.query[i : i + 1, :, kr], k, kr, cap.scaling, cap.sliding_window)[0].float()
                keyed[i].append(att)  # (H, T_i)

    record = {id(m): i for i in range(exit_layer) for m in layers[i].modules()} if attention else None
    armed = _Armed(
        frozenset(id(m) for m in layers[exit_layer].modules()), record, observe=observe if attention else None
    )
    out: list[PassRecord] = []
    hooks = (
        [layers[i].register_forward_pre_hook(on_hidden, with_kwargs=True) for i in range(exit_layer + 1)]
        if hidden
        else []
    )
    token = _ARMED.set(armed)
    try:
        with _routed(model), torch.inference_mode():
            yield out
    except _StopForward as stop:
        if attention:
            observe(exit_layer, stop.capture)
        cap = stop.capture
        for i, r in enumerate(rows):
            att = torch.stack(stacks[i]).cpu() if attention else None  # (L, H, T_i)
            sim = torch.stack(sims[i]).cpu() if hidden else None  # (L, T_i)
            key = torch.stack(keyed[i]).cpu() if key_rows is not None else None  # (L, H, T_i)
            q = cap.query[i : i + 1, :, r]  # (1, H, Q, D)
            k = cap.key[i : i + 1, :, : lengths[i]]  # (1, KV, T_i, D)
            out.append(PassRecord(q, k, r, cap.scaling, cap.sliding_window, att, sim, key))
        return
    finally:
        _ARMED.reset(token)
        for h in hooks:
            h.remove()
    raise RuntimeError(
        f"model: layer {exit_layer} of {type(model).__name__} never called its attention function; "
        "this architecture does not route attention through transformers' AttentionInterface."
    )


def run_pass(
    model: nn.Module,
    input_ids: torch.Tensor,
    exit_layer: int,
    rows: Sequence[torch.Tensor],
    lengths: Sequence[int],
    attention: bool,
    hidden: bool = False,
    key_rows: Sequence[torch.Tensor] | None = None,
) -> list[PassRecord]:
    """One early-exit pass over right-padded ``input_ids`` (B, T) without a padding mask (see ``recording``)."""
    with recording(model, exit_layer, rows, lengths, attention, hidden, key_rows) as out:
        model(input_ids=input_ids, attention_mask=None, use_cache=False)
    return out


# ---------------------------------------------------------------- the cached path: tables, live pass


def rotary_tables(model: nn.Module, length: int, layers: Sequence[int]) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """The rotary ``(cos, sin)`` tables, (length, R) each, that ``layers`` of ``model`` use at positions
    ``0..length-1`` in a pass of ``length`` tokens, from the model's own rotary module (one call per
    layer type: Gemma 3's sliding layers have their own). ``rope.rerotate`` moves keys with them."""
    rotary = _rotary_module(model)
    config: Any = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    types = getattr(text, "layer_types", None)
    typed = "layer_type" in inspect.signature(rotary.forward).parameters
    embed: Any = getattr(model, "get_input_embeddings", lambda: None)()
    weight = getattr(embed, "weight", None)
    dtype = weight.dtype if isinstance(weight, torch.Tensor) else torch.float32
    x = torch.zeros(1, 1, 1, dtype=dtype, device=_device(model))  # only its dtype and device are read
    positions = torch.arange(length, device=x.device)[None]  # (1, length)
    by_type: dict[str | None, tuple[torch.Tensor, torch.Tensor]] = {}
    out: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    with torch.inference_mode():
        for layer in layers:
            kind = types[layer] if typed and types is not None else None
            if kind not in by_type:
                cos, sin = rotary(x, positions, kind) if typed else rotary(x, positions)  # (1, length, R) each
                by_type[kind] = (cos[0], sin[0])
            out[int(layer)] = by_type[kind]
    return out


_ROTARY: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()


def _rotary_module(model: nn.Module) -> nn.Module:
    """The model-level rotary embedding module (the one whose (cos, sin) every decoder layer receives), found
    once per model object."""
    found = _ROTARY.get(model)
    if found is None:
        found = _ROTARY[model] = _find_rotary_module(model)
    return found


def _find_rotary_module(model: nn.Module) -> nn.Module:
    layers = decoder_layers(model)
    inside = {id(m) for layer in layers for m in layer.modules()}
    found = [
        m
        for name, m in model.named_modules()
        if name.split(".")[-1] == "rotary_emb" and id(m) not in inside and callable(getattr(m, "forward", None))
    ]
    if len(found) != 1:
        raise ValueError(
            f"model: {type(model).__name__} has {len(found)} model-level rotary embeddings (rotary_emb); the chunk "
            "cache re-rotates keys with the model's own rotary module and needs exactly one. Use it without cache=."
        )
    return found[0]


def _device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters
        return torch.device("cpu")


def _cache_argument(model: nn.Module) -> str:
    """The name the model's forward takes its key/value cache under: ``cache`` (transformers >= 5.2x) or
    ``past_key_values`` (earlier 5.x)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _context_cache(past: Sequence[tuple[torch.Tensor, torch.Tensor]], room: int, device: torch.device) -> Any:
    """A transformers ``DynamicCache`` holding the context's keys/values ``past`` (1, KV, C, D) per layer, each
    layer in a buffer with ``room`` more tokens, so that the live tokens' keys/values are written after the
    context instead of the whole context being copied again (``DynamicLayer.update`` concatenates)."""
    from transformers import DynamicCache

    cache = DynamicCache()
    layer_class = _filled_layer_class()
    cache.layers = [layer_class(k.to(device), v.to(device), room) for k, v in past]
    return cache


@functools.cache
def _filled_layer_class() -> Any:
    """A transformers ``DynamicLayer`` that starts filled and grows inside a buffer made with room (defined on
    first use, so that importing this module does not import transformers' cache classes)."""
    from transformers.cache_utils import DynamicLayer

    class FilledLayer(DynamicLayer):  # type: ignore[misc, valid-type]
        def __init__(self, keys: torch.Tensor, values: torch.Tensor, room: int) -> None:
            super().__init__()
            *lead, c, d = keys.shape
            self.keys = keys.new_empty(*lead, c + room, d)  # (1, KV, C + room, D)
            self.values = values.new_empty(*values.shape[:-2], c + room, values.shape[-1])
            self.keys[..., :c, :] = keys
            self.values[..., :c, :] = values
            self.filled = c
            self.device = keys.device
            self.is_initialized = True

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            keys, values = self.keys, self.values
            assert keys is not None and values is not None, "a FilledLayer starts filled"
            end = self.filled + int(key_states.shape[-2])
            if end > keys.shape[-2]:  # more than the room made: grow as a DynamicLayer does
                keys = torch.cat([keys[..., : self.filled, :], key_states], dim=-2)
                values = torch.cat([values[..., : self.filled, :], value_states], dim=-2)
                self.keys, self.values = keys, values
            else:
                keys[..., self.filled : end, :] = key_states
                values[..., self.filled : end, :] = value_states
            self.filled = end
            return keys[..., :end, :], values[..., :end, :]

        def get_seq_length(self) -> int:
            return int(self.filled)

    return FilledLayer


@torch.inference_mode()
def run_cached_pass(
    model: nn.Module,
    live_ids: torch.Tensor,
    past: Sequence[tuple[torch.Tensor, torch.Tensor]],
    exit_layer: int,
    rows: torch.Tensor,
    attention: bool,
    key_rows: torch.Tensor | None = None,
) -> PassRecord:
    """One early-exit pass of the prompt's last tokens over the context's keys and values from elsewhere.

    ``past[l]`` is (key, value) of layers ``l = 0..exit_layer``, (1, KV, C, D) each, for the C context tokens
    at positions ``0..C-1`` (post-RoPE keys, at those positions: ``rope.rerotate``; layer ``exit_layer``'s
    values are never read and may be zeros). ``live_ids`` (N,) are the tokens at positions ``C..C+N-1``
    (the template's middle, the question and the suffix); they run through the model's own layers
    ``0..exit_layer`` with the context as past keys/values (a transformers ``DynamicCache``, positions
    continuing after the context), so each of them attends to every context token as in a pass over the
    whole prompt. ``rows`` (Q,) and ``key_rows`` (K,) are positions in the whole prompt (all of them live).

    The record is the one ``recording`` gives for the whole prompt, with one exception: ``similarity`` is
    None, because the context's hidden states never exist on this path (only its keys and values do).
    ``attention`` and ``key_attention`` are (L, H, C + N), the exit layer's ``key`` (1, KV, C + N, D).
    """
    layers = decoder_layers(model)
    if not 0 <= exit_layer < len(layers):
        raise ValueError(f"filter_layer: {exit_layer} is outside this model's layers; use 0..{len(layers) - 1}.")
    if len(past) != exit_layer + 1:
        raise ValueError(
            f"past: has {len(past)} layers of keys/values; the pass to layer {exit_layer} needs {exit_layer + 1}."
        )
    start = int(past[0][0].shape[2])
    live = int(live_ids.shape[0])
    for name, r in (("rows", rows), ("key_rows", key_rows)):
        if r is not None and r.numel() and (int(r.min()) < start or int(r.max()) >= start + live):
            raise ValueError(
                f"{name}: the cached path scores only the tokens after the context (positions {start}.."
                f"{start + live - 1}); score with query='question' or 'last' (ScoringConfig.query)."
            )
    if key_rows is not None and not attention:
        raise ValueError("key_rows: need attention=True.")
    device = _device(model)
    rows = rows.to(device)
    stacks: list[torch.Tensor] = []
    keyed: list[torch.Tensor] = []
    kr = key_rows.to(device) if key_rows is not None else None  # (K,)

    def mean_rows(cap: LayerCapture, r: torch.Tensor) -> torch.Tensor:
        """The mean attention of the rows at positions ``r`` (R,) at this layer: (H, C + N)."""
        if cap.probs is not None:  # the layer's attention, computed once for every live row (_attend)
            return cap.probs[0][:, r - start].float().mean(dim=1)
        q = cap.query[:, :, r - start]  # (1, H, R, D)
        return row_attention(q, cap.key, r, cap.scaling, cap.sliding_window)[0].float()

    def observe(layer: int, cap: LayerCapture) -> None:
        stacks.append(mean_rows(cap, rows))  # (H, C + N)
        if kr is not None:
            keyed.append(mean_rows(cap, kr) if kr.numel() else stacks[-1])  # (H, C + N)

    cache = _context_cache(past, live, device)
    positions = torch.arange(start, start + live, device=device)[None]  # (1, N)
    record = {id(m): i for i in range(exit_layer) for m in layers[i].modules()} if attention else None
    # recorded layers compute their attention once, for the output and the record (_attend), while every live
    # row's weights stay small beside the pass (FUSED_WEIGHTS per head)
    fused = positions[0] if attention and live * (start + live) <= FUSED_WEIGHTS else None
    armed = _Armed(
        frozenset(id(m) for m in layers[exit_layer].modules()),
        record,
        observe=observe if attention else None,
        live=fused,
    )
    token = _ARMED.set(armed)
    try:
        with _routed(model):
            model(
                input_ids=live_ids.to(device)[None],
                position_ids=positions,
                use_cache=True,
                **{_cache_argument(model): cache},
            )
    except _StopForward as stop:
        cap = stop.capture
        if attention:
            observe(exit_layer, cap)
        return PassRecord(
            cap.query[:, :, rows - start],  # (1, H, Q, D)
            cap.key,  # (1, KV, C + N, D)
            rows,
            cap.scaling,
            cap.sliding_window,
            torch.stack(stacks).cpu() if attention else None,  # (L, H, C + N)
            None,
            torch.stack(keyed).cpu() if key_rows is not None else None,  # (L, H, C + N)
        )
    finally:
        _ARMED.reset(token)
    raise RuntimeError(
        f"model: layer {exit_layer} of {type(model).__name__} never called its attention function; "
        "this architecture does not route attention through transformers' AttentionInterface."
    )
