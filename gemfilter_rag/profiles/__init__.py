"""Per-model defaults: the filter layer and scoring measured (or published) for a model.

A profile matches a model by its architecture (model type and shape), so the same weights match
whether they were loaded from a GGUF file, a local directory or the hub cache.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Profile:
    """Defaults for one model, and where they come from."""

    name: str
    match: dict[str, Any]
    filter_layer: int
    scoring: dict[str, Any] = field(default_factory=dict)
    granularity: str = "sentence"
    top_k: int = 1024
    window: int | None = None
    """Longest filter pass in tokens (``GemFilterConfig.window``); None: the model's maximum positions."""
    source: str = ""
    """"measured: ..." (with the command and budget) or "paper: ..."."""
    measurements: dict[str, Any] = field(default_factory=dict)
    readout: dict[str, Any] | None = None
    """A trained ``ReadoutSet`` (``ReadoutSet.to_dict()``) from ``gemfilter train-readout``, or None."""

    def readouts(self) -> ReadoutSet | None:
        """The trained readouts of this model, if the profile ships them."""
        return ReadoutSet.from_dict(self.readout) if self.readout else None

    def config(self) -> GemFilterConfig:
        """The ``GemFilterConfig`` this profile stands for."""
        return GemFilterConfig(
            filter_layer=self.filter_layer,
            top_k=self.top_k,
            granularity=self.granularity,  # type: ignore[arg-type]
            scoring=ScoringConfig(**self.scoring),
            window=self.window,
        )

    def matches(self, model_config: Any) -> bool:
        """Whether a model's config has this profile's architecture."""
        cfg = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
        return all(getattr(cfg, k, None) == v for k, v in self.match.items())

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        """Read a profile from its JSON file."""
        data = json.loads(Path(path).read_text())
        return cls(**data)

    def save(self, path: str | Path) -> None:
        """Write the profile as JSON."""
        from dataclasses import asdict

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
        Profile(**json.loads(p.read_text()))
        for p in sorted(folder.iterdir(), key=lambda p: p.name)
        if p.name.endswith(".json")
    ]


def find_profile(model_config: Any) -> Profile | None:
    """The shipped profile whose architecture matches the model, if any."""
    for profile in shipped_profiles():
        if profile.matches(model_config):
            return profile
    return None
