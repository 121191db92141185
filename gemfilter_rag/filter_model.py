"""``FilterModel``: the loaded filter LM and what a pass needs of it, built once and shared by siblings.

It holds the model, its tokenizer, its decoder layers and profile, and runs right-padded batched
early-exit passes (``capture.run_pass``) behind the memory guard. It knows nothing of scoring.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from . import capture, memory
from .capture import PassRecord
from .profiles import Profile, find_profile


class FilterModel:
    """A causal LM ready for filter passes: model, tokenizer, layers, positions, device and profile.

    Args:
        model: a loaded transformers decoder-only causal LM.
        tokenizer: its fast tokenizer (it must return character offsets).
        profile: the model's ``Profile``, the path of a profile JSON, or None for the matching shipped
            profile (``match_profile=False``: no profile at all).
    """

    def __init__(
        self, model: Any, tokenizer: Any, profile: str | Path | Profile | None = None, *, match_profile: bool = True
    ) -> None:
        if model is None or not isinstance(model, torch.nn.Module):
            raise TypeError(
                f"model: expected a loaded transformers model, got {type(model).__name__}; "
                "use GemFilterCompressor.from_pretrained(path) to load one."
            )
        if tokenizer is None or not callable(tokenizer):
            raise TypeError(f"tokenizer: expected a transformers tokenizer, got {type(tokenizer).__name__}.")
        self.model = model
        self.tokenizer = tokenizer
        self.layers = capture.decoder_layers(model)
        if profile is not None and not isinstance(profile, Profile):
            if not Path(profile).is_file():
                raise FileNotFoundError(
                    f"profile: no profile JSON at {profile}; pass a file written by `gemfilter calibrate` or a Profile."
                )
            profile = Profile.load(profile)
        self.profile: Profile | None = profile or (find_profile(model.config) if match_profile else None)

    @property
    def num_layers(self) -> int:
        """Number of decoder layers."""
        return len(self.layers)

    @property
    def max_positions(self) -> int | None:
        """Longest prompt, in tokens, that the model accepts (None: its config states no limit)."""
        config: Any = self.model.config
        cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
        value = getattr(cfg, "max_position_embeddings", None)
        return int(value) if value else None

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters (CPU for a model without any)."""
        return device_of(self.model)

    def layer(self, requested: int | None) -> int:
        """The filter layer: ``requested``, or the middle layer (``round(num_layers / 2) - 1``) for None."""
        layer = max(0, round(0.5 * self.num_layers) - 1) if requested is None else requested
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"filter_layer: {layer} is outside this model's layers; use 0..{self.num_layers - 1}.")
        return layer

    def run(
        self,
        inputs: Sequence[tuple[torch.Tensor, torch.Tensor]],
        exit_layer: int,
        attention: bool,
        hidden: bool = False,
        key_rows: Sequence[torch.Tensor] | None = None,
    ) -> list[PassRecord]:
        """One filter pass over several prompts: ``inputs`` are (ids (T_i,), scoring rows (Q_i,)) pairs.

        Right padding: a causal model never lets a real token see a padding token after it, and every
        real token keeps its unpadded position, so each item gets what a pass of its own gives. Keys
        are sliced back to the item's length, so padded keys never enter a softmax. No padding mask is
        passed for the same reason: the causal mask alone is exact for real tokens, and it keeps SDPA on
        its causal kernel (on a 2-core CPU a masked batch of 8 prompts of 1.6K tokens took 13.4 s, the
        same batch unmasked 10.0 s, one by one 11.0 s). With ``attention`` the rows' attention at every
        layer ``0..exit_layer`` is recorded too (``PassRecord.attention``); with ``hidden``, every token's
        hidden-state similarity to the rows' at the input of those layers (``PassRecord.similarity``); with
        ``key_rows`` (K_i,) per item, the mean attention of those rows too (``PassRecord.key_attention``).

        On a model with int8 dynamic quantisation (``loading.quantize_int8``) every prompt runs alone: the
        activations' scale is taken over the whole call, so a batch would change each item's result.
        """
        if len(inputs) > 1 and getattr(self.model, "gemfilter_quantized", None) == "int8":
            return [
                rec
                for i, item in enumerate(inputs)
                for rec in self.run(
                    [item], exit_layer, attention, hidden, [key_rows[i]] if key_rows is not None else None
                )
            ]
        device = self.device
        lengths = [int(ids.shape[0]) for ids, _ in inputs]
        rows = [r.to(device) for _, r in inputs]
        keys = [r.to(device) for r in key_rows] if key_rows is not None else None
        longest = max(lengths)
        memory.check_pass(
            self.model,
            longest,
            max(int(r.numel()) for r in rows),
            batch=len(inputs),
            device=device,
            recorded_layers=(exit_layer + 1) * (2 if keys is not None else 1) if attention else 0,
        )
        if len(inputs) == 1:
            ids = inputs[0][0][None]  # (1, T)
        else:
            ids = torch.full((len(inputs), longest), self.pad_id, dtype=torch.long)  # (B, T)
            for i, (x, _) in enumerate(inputs):
                ids[i, : x.shape[0]] = x
        return capture.run_pass(self.model, ids.to(device), exit_layer, rows, lengths, attention, hidden, keys)

    def encode(
        self, inputs: Sequence[torch.Tensor], exit_layer: int, extra: Mapping[str, int] | None = None
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Keys and values of several token sequences (T_i,) at layers ``0..exit_layer``, in one right-padded pass.

        Returns per item (keys (L + 1, KV, T_i, D) post-RoPE, values (L, KV, T_i, D)) with L = ``exit_layer``:
        what the chunk cache keeps (layer L's values are never read). Right padding is exact for every real
        token (see ``run``). ``extra``: named bytes the memory guard counts besides the pass. A dynamically
        quantised model (int8 Linear layers, ``loading.quantize_int8``) scales its activations by the range of
        the whole call, so there each sequence gets a pass of its own: its entry does not depend on what it was
        encoded with.
        """
        if len(inputs) > 1 and self.dynamic_quantized:
            return [item for x in inputs for item in self.encode([x], exit_layer, extra)]
        device = self.device
        lengths = [int(ids.shape[0]) for ids in inputs]
        longest = max(lengths)
        held = memory.kv_bytes(self.model, exit_layer, len(inputs) * longest)
        memory.check_pass(
            self.model, longest, 1, batch=len(inputs), device=device, extra={"kept keys/values": held, **(extra or {})}
        )
        ids = torch.full((len(inputs), longest), self.pad_id, dtype=torch.long)  # (B, T)
        for i, x in enumerate(inputs):
            ids[i, : x.shape[0]] = x
        caps = capture.capture_layers(self.model, ids.to(device), list(range(exit_layer + 1)), values=True)
        out = []
        for i, n in enumerate(lengths):
            keys = torch.stack([caps[layer].key[i, :, :n] for layer in range(exit_layer + 1)])  # (L + 1, KV, n, D)
            values = [caps[layer].value[i, :, :n] for layer in range(exit_layer)]  # type: ignore[index]
            first = keys[0]
            stacked = torch.stack(values) if values else first.new_zeros((0, *first.shape))  # (L, KV, n, D)
            out.append((keys, stacked))
        return out

    def run_cached(
        self,
        live_ids: torch.Tensor,
        past: Sequence[tuple[torch.Tensor, torch.Tensor]],
        exit_layer: int,
        rows: torch.Tensor,
        attention: bool,
        key_rows: torch.Tensor | None = None,
        extra: Mapping[str, int] | None = None,
    ) -> PassRecord:
        """One cached pass (``capture.run_cached_pass``) behind the memory guard: ``live_ids`` (N,) over the
        context's keys and values ``past`` (layers ``0..exit_layer``, (1, KV, C, D) each)."""
        context = int(past[0][0].shape[2])
        memory.check_cached_pass(
            self.model,
            context,
            int(live_ids.shape[0]),
            int(rows.numel()),
            exit_layer=exit_layer,
            device=self.device,
            recorded_layers=(exit_layer + 1) * (2 if key_rows is not None else 1) if attention else 0,
            extra=extra,
        )
        return capture.run_cached_pass(self.model, live_ids, past, exit_layer, rows, attention, key_rows)

    @property
    def dynamic_quantized(self) -> bool:
        """Whether the model has dynamically quantised layers (their activation scale depends on the whole call)."""
        if getattr(self.model, "gemfilter_quantized", None):
            return True
        return any(type(m).__module__.startswith("torch.ao.nn.quantized.dynamic") for m in self.model.modules())

    @property
    def pad_id(self) -> int:
        """The id right padding uses: the tokenizer's pad token, else its end-of-sequence token, else 0."""
        for name in ("pad_token_id", "eos_token_id"):
            value = getattr(self.tokenizer, name, None)
            if isinstance(value, int):
                return value
        return 0


def device_of(model: torch.nn.Module) -> torch.device:
    """The device of the model's parameters (CPU for a model without any)."""
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters
        return torch.device("cpu")
