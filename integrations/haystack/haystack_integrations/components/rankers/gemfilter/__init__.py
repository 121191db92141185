"""GemFilter for Haystack: ``GemFilterDocumentCompressor``, a component that keeps, across the retrieved
documents, the tokens an early layer of a small local LM attends to for the query."""

from haystack_integrations.components.rankers.gemfilter.compressor import GemFilterDocumentCompressor

__version__ = "0.1.0"

__all__ = ["GemFilterDocumentCompressor", "__version__"]
