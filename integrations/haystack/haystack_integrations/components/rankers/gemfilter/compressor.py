"""``GemFilterDocumentCompressor``: GemFilter as a Haystack component."""

import dataclasses
import math
import numbers
from typing import Any, Literal

from haystack import Document, component, default_from_dict, default_to_dict
from haystack.core.errors import SerializationError
from haystack.utils import ComponentDevice

from gemfilter_rag import CompressionResult, GemFilterCompressor, RemoteGemFilterCompressor
from gemfilter_rag.adapting import CompressorHolder, adopt, check_sources, config_options, open_compressor

GRANULARITIES = ("token", "sentence", "document")


@component
class GemFilterDocumentCompressor:
    """
    Keeps the parts of the retrieved documents that an early layer of a small local LM attends to for the query.

    ``top_k`` is one **token** budget shared by all the documents of a run (as in the GemFilter paper), not a
    number of documents. The component returns every input document exactly once, in input order, in one of
    two lists:

    - ``documents``: those that kept any text. ``content`` is the kept text (exact substrings of the original);
      ``id``, ``score``, ``embedding`` and the rest are the original's, ``meta`` is a copy of the original's plus
      ``meta["gemfilter"]``: ``index`` (position in the input), ``kept_tokens``, ``original_tokens``, ``ratio``,
      ``score_share``, ``spans`` (kept ``[start, end)`` character offsets into the original) and ``filter_layer``.
    - ``dropped``: those of which nothing was kept, unchanged but for the same ``meta["gemfilter"]``
      (``kept_tokens`` 0, no spans).

    With ``endpoint`` set, no model is loaded here: the documents go to a ``gemfilter serve`` service and come
    back mapped exactly as a local run maps them.

    Usage example:
    ```python
    from haystack import Document
    from haystack_integrations.components.rankers.gemfilter import GemFilterDocumentCompressor

    compressor = GemFilterDocumentCompressor(top_k=256)  # embedded SmolLM2-135M-Instruct
    compressor.warm_up()
    docs = [Document(content="The vault code is 4417. The museum opens at nine."), Document(content="...")]
    out = compressor.run(documents=docs, query="What is the vault code?")
    print([d.content for d in out["documents"]])
    ```
    """

    def __init__(
        self,
        model: str | None = None,
        top_k: int | None = None,
        granularity: Literal["token", "sentence", "document"] | None = None,
        filter_layer: int | None = None,
        options: dict[str, Any] | None = None,
        device: ComponentDevice | str | None = None,
        dtype: str | None = None,
        embeddings: Any = "auto",
        use_document_scores: bool = True,
        meta_key: str = "gemfilter",
        endpoint: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        compressor: GemFilterCompressor | None = None,
    ) -> None:
        """
        Creates the component; the model is loaded by `warm_up()` (a Pipeline calls it), not here.

        :param model: Filter model to load: None for the embedded default (SmolLM2-135M-Instruct), a local model
            directory, a .gguf file, or a hub id already in the local cache.
        :param top_k: Token budget across all documents of one run; None uses the compressor's `config.top_k`.
        :param granularity: Unit of selection: single tokens (the paper), whole sentences, or whole documents;
            None keeps the compressor's setting.
        :param filter_layer: Layer whose attention scores the tokens; None keeps the model profile's layer.
        :param options: Further `GemFilterConfig` or `ScoringConfig` fields, e.g. `{"pool": "avg"}`.
        :param device: Device to load `model` on (a `ComponentDevice` or a string such as "cpu" or "cuda:0");
            None picks CUDA when available.
        :param dtype: Torch dtype to load `model` in ("float32", "bfloat16", ...); None picks one.
        :param embeddings: Embedding model whose similarities of each sentence and document to the query the trained
            readout adds to attention: "auto" (the given compressor's, or the library default when the model is
            loaded here), "default" for all-MiniLM-L6-v2, None for attention alone, or a sentence-transformers
            model or a function from texts to vectors (these last two cannot be saved in a pipeline file).
        :param use_document_scores: Pass every document's `score` (the retriever's; higher = more relevant) to the
            compressor as `document_scores`, so that they share out the budget; ignored when any document has none.
        :param meta_key: Key of the compression statistics in each output document's `meta`.
        :param endpoint: Base URL of a `gemfilter serve` service (e.g. "http://127.0.0.1:8000") to compress on
            instead of a local model; None compresses in this process.
        :param timeout: Seconds to wait for the service's answer (with `endpoint`).
        :param max_retries: Retries when the service answers 429/503 (with `endpoint`).
        :param compressor: An existing `GemFilterCompressor`, so that one loaded model serves several components.
            A component built with it cannot be saved in a pipeline file (pass `model` instead).
        """
        _check_fields(top_k, granularity, filter_layer, options, meta_key, endpoint, timeout, max_retries)
        self.model = model
        self.top_k = top_k
        self.granularity = granularity
        self.filter_layer = filter_layer
        self.options = dict(options or {})
        self.device = _device(device)
        self.dtype = dtype
        self.embeddings = embeddings
        self.use_document_scores = use_document_scores
        self.meta_key = meta_key
        self.endpoint = endpoint
        self.timeout = timeout
        self.max_retries = max_retries
        self._given = compressor is not None
        given = None
        if compressor is not None:
            given = adopt(
                compressor, model=model, endpoint=endpoint, embeddings=embeddings, options=self._config_options()
            )
        else:
            check_sources(model, endpoint, embeddings)
        self._holder = CompressorHolder(self._open, given, remote=endpoint is not None)

    def _open(self) -> GemFilterCompressor | RemoteGemFilterCompressor:
        return open_compressor(
            model=self.model,
            endpoint=self.endpoint,
            device=self.device.to_torch_str() if self.device is not None else None,
            dtype=self.dtype,
            embeddings=self.embeddings,
            options=self._config_options(),
            timeout=self.timeout,
            max_retries=self.max_retries,
        )

    @property
    def compressor(self) -> GemFilterCompressor | RemoteGemFilterCompressor | None:
        """The compressor in use: the given or loaded local one, the service's client, or None before `warm_up()`."""
        return self._holder.compressor if self._holder.loaded else None

    def warm_up(self) -> None:
        """
        Loads the model (or opens the service's client); does nothing when already done.

        A Pipeline calls it before running; `run` calls it too, so a component used on its own loads on first use.
        """
        self._holder.compressor  # noqa: B018 - opened once, under the holder's lock

    @component.output_types(documents=list[Document], dropped=list[Document])
    def run(self, documents: list[Document], query: str, top_k: int | None = None) -> dict[str, list[Document]]:
        """
        Keeps at most `top_k` tokens of `documents` for `query`.

        :param documents: The retrieved documents, in the order their kept text should be read.
        :param query: The question the documents must answer.
        :param top_k: Token budget for this run; None uses the one given at construction.
        :returns: A dictionary with:
            - `documents`: in input order, the documents that kept text, holding only the kept text.
            - `dropped`: in input order, the documents of which nothing was kept, unchanged.
            Both carry their statistics in `meta[meta_key]`.
        :raises ValueError: If `query` is empty, a document has no text, or `top_k` is not a positive integer.
        """
        docs, scores, budget = self._inputs(documents, query, top_k)
        if not docs:
            return {"documents": [], "dropped": []}
        result = self._holder.compress([d.content or "" for d in docs], query, top_k=budget, document_scores=scores)
        return self._outputs(docs, result)

    @component.output_types(documents=list[Document], dropped=list[Document])
    async def run_async(
        self, documents: list[Document], query: str, top_k: int | None = None
    ) -> dict[str, list[Document]]:
        """
        Like `run`, without blocking the event loop: the service's async client with `endpoint`, else a thread.

        :param documents: The retrieved documents, in the order their kept text should be read.
        :param query: The question the documents must answer.
        :param top_k: Token budget for this run; None uses the one given at construction.
        :returns: The same dictionary as `run`.
        """
        docs, scores, budget = self._inputs(documents, query, top_k)
        if not docs:
            return {"documents": [], "dropped": []}
        texts = [d.content or "" for d in docs]
        result = await self._holder.acompress(texts, query, top_k=budget, document_scores=scores)
        return self._outputs(docs, result)

    def close(self) -> None:
        """Closes the service's HTTP client (with `endpoint`); a local model stays loaded."""
        if isinstance(self.compressor, RemoteGemFilterCompressor):
            self.compressor.close()

    async def close_async(self) -> None:
        """Closes the service's HTTP clients, the async one of the running event loop included."""
        remote = self.compressor
        if isinstance(remote, RemoteGemFilterCompressor):
            remote.close()
            await remote.aclose()

    def to_dict(self) -> dict[str, Any]:
        """
        Serializes the component to a dictionary (what `Pipeline.dumps` writes).

        :raises SerializationError: If the component was built with a `compressor` object or an embedding model
            object, which a pipeline file cannot hold.
        """
        if self._given:
            raise SerializationError(
                "compressor: this GemFilterDocumentCompressor wraps a GemFilterCompressor object, which a pipeline "
                "file cannot hold; build it with model='<local directory or .gguf>' (and its options) to save it."
            )
        if not (self.embeddings is None or isinstance(self.embeddings, str)):
            raise SerializationError(
                f"embeddings: a {type(self.embeddings).__name__} object cannot be saved in a pipeline file; "
                "pass 'auto', 'default' or None to save this component."
            )
        return default_to_dict(
            self,
            model=self.model,
            top_k=self.top_k,
            granularity=self.granularity,
            filter_layer=self.filter_layer,
            options=self.options,
            device=self.device.to_dict() if self.device is not None else None,
            dtype=self.dtype,
            embeddings=self.embeddings,
            use_document_scores=self.use_document_scores,
            meta_key=self.meta_key,
            endpoint=self.endpoint,
            timeout=self.timeout,
            max_retries=self.max_retries,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GemFilterDocumentCompressor":
        """
        Deserializes the component from a dictionary made by `to_dict`.

        :param data: The dictionary.
        :returns: The component, not yet warmed up.
        """
        params = dict(data.get("init_parameters", {}))
        if isinstance(params.get("device"), dict):
            params["device"] = ComponentDevice.from_dict(params["device"])
        return default_from_dict(cls, {**data, "init_parameters": params})

    def _config_options(self) -> dict[str, Any]:
        return config_options(self.options, self.granularity, self.filter_layer)

    def _inputs(
        self, documents: list[Document], query: str, top_k: int | None
    ) -> tuple[list[Document], list[float] | None, int | None]:
        """The checked documents, their retriever scores (None unless used) and the run's budget."""
        if isinstance(documents, (str, Document)) or not hasattr(documents, "__iter__"):
            raise TypeError(
                f"documents: expected a list of haystack Documents, got {type(documents).__name__}; "
                "connect a retriever's `documents` output or pass documents=[Document(content=...)]."
            )
        docs = list(documents)
        for i, doc in enumerate(docs):
            if not isinstance(doc, Document):
                raise TypeError(f"documents[{i}]: expected a haystack Document, got {type(doc).__name__}.")
            if doc.content is None:
                raise ValueError(
                    f"documents[{i}]: has no text (content=None, id={doc.id!r}); GemFilter compresses text only, "
                    "so convert or route such documents around this component."
                )
        _check_top_k("top_k", top_k)
        if docs and (not isinstance(query, str) or not query.strip()):
            raise ValueError(f"query: {query!r} is empty; pass the question the documents must answer.")
        scores = [d.score for d in docs]
        use = self.use_document_scores and bool(docs) and all(_is_number(s) for s in scores)
        budget = top_k if top_k is not None else self.top_k
        return docs, [float(s) for s in scores] if use else None, budget  # type: ignore[arg-type]

    def _outputs(self, docs: list[Document], result: CompressionResult) -> dict[str, list[Document]]:
        """Each input document once: kept ones with their kept text, the others unchanged (statistics in meta)."""
        kept: list[Document] = []
        dropped: list[Document] = []
        for r in result.documents:
            doc = docs[r.index]
            meta = {**doc.meta, self.meta_key: r.stats(result.filter_layer)}
            if r.kept:
                kept.append(dataclasses.replace(doc, content=r.text, meta=meta))
            else:
                dropped.append(dataclasses.replace(doc, meta=meta))
        return {"documents": kept, "dropped": dropped}


def _is_number(value: Any) -> bool:
    """A finite real number (numpy scalars included), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _device(device: ComponentDevice | str | None) -> ComponentDevice | None:
    """``device`` as a ``ComponentDevice`` (strings such as "cpu" or "cuda:0" converted)."""
    if device is None or isinstance(device, ComponentDevice):
        return device
    if isinstance(device, str):
        try:
            return ComponentDevice.from_str(device)
        except ValueError:
            pass
    raise ValueError(
        f"device: {device!r} is not a device; pass a ComponentDevice, a string such as 'cpu', 'cuda' or 'cuda:0', "
        "or None to pick CUDA when available."
    )


def _check_top_k(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise ValueError(f"{name}: {value!r} is not a token budget; pass a whole number > 0 (e.g. 512) or None.")


def _check_fields(
    top_k: Any,
    granularity: Any,
    filter_layer: Any,
    options: Any,
    meta_key: Any,
    endpoint: Any,
    timeout: Any,
    max_retries: Any,
) -> None:
    """Refuse constructor arguments that could only fail later, at warm-up or in a run."""
    _check_top_k("top_k", top_k)
    if granularity is not None and granularity not in GRANULARITIES:
        raise ValueError(f"granularity: {granularity!r} is not one of {GRANULARITIES} or None.")
    if filter_layer is not None and (isinstance(filter_layer, bool) or not isinstance(filter_layer, int)):
        raise ValueError(f"filter_layer: {filter_layer!r} is not a layer index; pass a whole number >= 0 or None.")
    if filter_layer is not None and filter_layer < 0:
        raise ValueError(f"filter_layer: {filter_layer!r} is negative; pass a layer index >= 0 or None.")
    if options is not None and not isinstance(options, dict):
        raise TypeError(f"options: expected a dict of GemFilterConfig fields, got {type(options).__name__}.")
    if not isinstance(meta_key, str) or not meta_key:
        raise ValueError(f"meta_key: {meta_key!r} is not a metadata key; pass a non-empty string, e.g. 'gemfilter'.")
    if endpoint is not None and (not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://"))):
        raise ValueError(
            f"endpoint: {endpoint!r} is not an http(s) URL; pass the service's base URL, e.g. 'http://127.0.0.1:8000'."
        )
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout: {timeout!r} is not valid; pass seconds > 0, e.g. 60.")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"max_retries: {max_retries!r} is not valid; pass a whole number >= 0, e.g. 3.")
