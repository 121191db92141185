"""Fixtures: tiny random causal LMs with an in-memory fast tokenizer, and the real default model."""

from gemfilter_fixtures import core, real_core, tokenizer

__all__ = ["core", "real_core", "tokenizer"]
