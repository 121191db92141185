"""GemFilter for LlamaIndex: ``GemFilterNodePostprocessor`` (compress retrieved nodes) and
``GemFilterSynthesizer`` (answer from the kept context with the same local model)."""

from llama_index.postprocessor.gemfilter.base import GemFilterNodePostprocessor
from llama_index.postprocessor.gemfilter.synthesizer import GemFilterSynthesizer

__version__ = "0.1.0"

__all__ = ["GemFilterNodePostprocessor", "GemFilterSynthesizer", "__version__"]
