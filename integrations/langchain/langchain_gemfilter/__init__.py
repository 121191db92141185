"""GemFilter for LangChain: ``GemFilterDocumentCompressor`` (compress retrieved documents) and
``GemFilterAnswer`` (a Runnable that answers from the kept context with the same local model)."""

from .answer import GemFilterAnswer
from .compressor import GemFilterDocumentCompressor

__version__ = "0.1.0"

__all__ = ["GemFilterAnswer", "GemFilterDocumentCompressor", "__version__"]
