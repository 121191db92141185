"""GemFilter for LlamaIndex: ``GemFilterNodePostprocessor`` (compress retrieved nodes),
``GemFilterSynthesizer`` (answer from the kept context with the same local model) and
``GemFilterCacheWarmer`` (an ingestion transformation that fills the compressor's chunk cache)."""

from llama_index.postprocessor.gemfilter.base import GemFilterNodePostprocessor
from llama_index.postprocessor.gemfilter.synthesizer import GemFilterSynthesizer
from llama_index.postprocessor.gemfilter.warm import GemFilterCacheWarmer

__version__ = "0.1.0"

__all__ = ["GemFilterCacheWarmer", "GemFilterNodePostprocessor", "GemFilterSynthesizer", "__version__"]
