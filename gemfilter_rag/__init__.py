"""GemFilter for RAG: compress retrieved context with the early layers of a local LLM."""

from .chunk_cache import ChunkCache
from .compressor import GemFilterCompressor
from .config import GemFilterConfig, ScoringConfig
from .generation import GenerationResult, GenerationStream
from .remote import RemoteGemFilterCompressor
from .result import CompressionResult, DocumentResult

__version__ = "0.1.0"

__all__ = [
    "ChunkCache",
    "CompressionResult",
    "DocumentResult",
    "GemFilterCompressor",
    "GemFilterConfig",
    "GenerationResult",
    "GenerationStream",
    "RemoteGemFilterCompressor",
    "ScoringConfig",
    "__version__",
]
