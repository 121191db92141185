"""GemFilter for Haystack: ``GemFilterDocumentCompressor``, a component that keeps, across the retrieved
documents, the tokens an early layer of a small local LM attends to for the query; ``GemFilterCacheWarmer``,
which fills the compressor's chunk cache in the indexing pipeline."""

from haystack_integrations.components.rankers.gemfilter.compressor import GemFilterDocumentCompressor
from haystack_integrations.components.rankers.gemfilter.warm import GemFilterCacheWarmer

__version__ = "0.1.0"

__all__ = ["GemFilterCacheWarmer", "GemFilterDocumentCompressor", "__version__"]
