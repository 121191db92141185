"""Per-model defaults: the filter layer and scoring measured (or published) for a model.

A profile matches a model by its architecture (model type and shape), so the same weights match
whether they were loaded from a GGUF file, a local directory or the hub cache.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from ..config import GemFilterConfig, ScoringConfig
from ..readout import ReadoutSet

MATCH_KEYS = (
    "model_type",
    "num_hidden_layers",
    "hidden_size",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
)


LEGACY_FIELDS = ("filter_layer", "scoring", "granularity", "top_k", "window")
"""``GemFilterConfig`` fields that profiles written before 0.2 kept at their top level (read into ``defaults``)."""


@dataclass(frozen=True)
class Profile:
    """Defaults for one model, and where they come from."""

    name: str
    match: dict[str, Any]
    defaults: dict[str, Any] = field(default_factory=dict)
    """``GemFilterConfig`` fields measured for this model (``scoring`` as a dict of ``ScoringConfig`` fields),
    e.g. ``{"filter_layer": 15, "window": 4096}``; the rest keep ``GemFilterConfig``'s own defaults."""
    source: str = ""
    """"measured: ..." (with the command and budget), "trained: ..." or "paper: ..."."""
    measurements: dict[str, Any] = field(default_factory=dict)
    readout: dict[str, Any] | None = None
    """A trained ``ReadoutSet`` (``ReadoutSet.to_dict()``) from ``gemfilter train-readout``, or None."""
    embeddings: str = "auto"
    """What ``from_pretrained(embeddings="auto")`` loads: "default" (all-MiniLM-L6-v2), "none", or "auto":
    MiniLM when the readout has a variant that reads it (profiles written before 0.2)."""

    def __post_init__(self) -> None:
        if self.embeddings not in ("auto", "default", "none"):
            raise ValueError(
                f"embeddings: {self.embeddings!r} is not valid in a profile; use 'auto', 'default' or 'none'."
            )
        if not isinstance(self.defaults, dict):
            raise TypeError(
                f"defaults: expected a dict of GemFilterConfig fields, got {type(self.defaults).__name__}; "
                "e.g. {'filter_layer': 15}."
            )
        self.config()  # every field valid, or a ValueError that names it

    @property
    def filter_layer(self) -> int | None:
        """The measured filter layer, if the profile sets one."""
        value = self.defaults.get("filter_layer")
        return None if value is None else int(value)

    def readouts(self) -> ReadoutSet | None:
        """The trained readouts of this model, if the profile ships them."""
        return ReadoutSet.from_dict(self.readout) if self.readout else None

    def config(self) -> GemFilterConfig:
        """The ``GemFilterConfig`` this profile stands for."""
        values = dict(self.defaults)
        if isinstance(values.get("scoring"), dict):
            values["scoring"] = ScoringConfig(**values["scoring"])
        return GemFilterConfig(**values)

    def with_defaults(self, **fields: Any) -> Profile:
        """A copy with some ``defaults`` changed."""
        return replace(self, defaults={**self.defaults, **fields})

    def matches(self, model_config: Any) -> bool:
        """Whether a model's config has this profile's architecture."""
        cfg = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
        return all(getattr(cfg, k, None) == v for k, v in self.match.items())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        """A profile from its JSON form; the top-level config fields of older profiles go into ``defaults``."""
        data = dict(data)
        legacy = {k: data.pop(k) for k in LEGACY_FIELDS if k in data}
        if legacy:
            data["defaults"] = {**legacy, **data.get("defaults", {})}
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        """Read a profile from its JSON file."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def save(self, path: str | Path) -> None:
        """Write the profile as JSON."""
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")


def fingerprint(model_config: Any) -> dict[str, Any]:
    """The architecture keys a profile matches on, read from a model's config."""
    cfg = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    return {k: getattr(cfg, k, None) for k in MATCH_KEYS}


def attention_heads(model_config: Any) -> int:
    """Number of query heads of a model (its text part, for multimodal configs)."""
    cfg = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    return int(cfg.num_attention_heads)


def shipped_profiles() -> list[Profile]:
    """The profiles that ship with the package."""
    folder = resources.files(__package__)
    return [
        Profile.from_dict(json.loads(p.read_text()))
        for p in sorted(folder.iterdir(), key=lambda p: p.name)
        if p.name.endswith(".json")
    ]


def find_profile(model_config: Any) -> Profile | None:
    """The shipped profile whose architecture matches the model, if any."""
    for profile in shipped_profiles():
        if profile.matches(model_config):
            return profile
    return None
