"""GemFilter for LangChain: ``GemFilterDocumentCompressor`` (compress retrieved documents),
``GemFilterAnswer`` (a Runnable that answers from the kept context with the same local model) and
``GemFilterCacheWarmer`` (a document transformer that fills the compressor's chunk cache at indexing)."""

from .answer import GemFilterAnswer
from .compressor import GemFilterDocumentCompressor
from .warm import GemFilterCacheWarmer

__version__ = "0.1.0"

__all__ = ["GemFilterAnswer", "GemFilterCacheWarmer", "GemFilterDocumentCompressor", "__version__"]
