"""The one pipeline behind ``compress``, ``compress_batch``, ``generate`` and the windows of long prompts:

    prompt -> pass (capture) -> features -> score -> select -> assemble

* **pass** (``run_passes``): one right-padded early-exit pass over one or more prompts; it keeps the
  filter layer's query rows and keys and, for the readout, the question's attention at every layer
  ``0..r`` (reduced per layer as the pass goes: (H, T) per prompt and layer, never T x T).
* **score** (``score_pass``): either the single-layer scoring (``ScoringConfig`` over the filter
  layer's query/key, one score per token) or the learned readout (``gemfilter_rag.readout`` over
  ``gemfilter_rag.features``, one value per unit). Both give token scores (N,) and unit values (U,).
* **select** (``select``): whole units by value within the budget (or tokens, the paper's way), with
  the retriever's scores used as ``GemFilterConfig.prior`` says.
* **assemble** (``gemfilter_rag.assemble``): exact spans and per-document provenance.

A new scoring is one function of a ``PassItem`` here; nothing else changes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from . import early_exit, memory
from .assemble import assemble
from .config import check_top_k
from .embeddings import Embedder
from .features import relative_scores, unit_features
from .prior import add_prior, check_document_scores, share_budget
from .prompt import FilterPrompt, build_prompt
from .readout import Readout
from .result import CompressionResult
from .scoring import query_positions, row_attention, token_scores
from .selection import Unit, select_ranked, select_tokens, spread, unit_scores
from .units import PromptUnits, prompt_units, unit_text
from .validation import DEFAULT_BATCH_SIZE, check_batch_size

if TYPE_CHECKING:
    from .compressor import GemFilterCompressor


@dataclass(frozen=True)
class PassItem:
    """What one filter pass measured for one prompt of its batch."""

    query: torch.Tensor  # (1, H, Q, D): the scoring rows at the filter layer
    key: torch.Tensor  # (1, KV, T, D): every key of the prompt at the filter layer
    rows: torch.Tensor  # (Q,) positions of the scoring rows
    scaling: float
    sliding_window: int | None
    attention: torch.Tensor | None  # (L, H, T): the rows' mean attention at layers 0..r (readout only)


@dataclass(frozen=True)
class Scores:
    """One prompt's scores: per context token (shares, explain view) and per unit (selection)."""

    tokens: torch.Tensor  # (N,) float32
    units: torch.Tensor  # (U,) float64, higher = keep first


def device_of(model: torch.nn.Module) -> torch.device:
    """The device of the model's parameters (CPU for a model without any)."""
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters
        return torch.device("cpu")


def build_prompts(comp: GemFilterCompressor, items: Sequence[tuple[Sequence[str], str]]) -> list[FilterPrompt]:
    """The filter prompt of every (documents, query) item, with the compressor's template settings."""
    cfg = comp.config
    return [
        build_prompt(
            comp.tokenizer,
            docs,
            query,
            separator=cfg.separator,
            template=cfg.template,
            use_chat_template=cfg.use_chat_template,
        )
        for docs, query in items
    ]


def run_passes(
    comp: GemFilterCompressor, inputs: Sequence[tuple[torch.Tensor, torch.Tensor]], record: bool
) -> list[PassItem]:
    """One filter pass over several prompts: ``inputs`` are (ids (T_i,), scoring rows (Q_i,)) pairs.

    Right padding: a causal model never lets a real token see a padding token after it, and every
    real token keeps its unpadded position, so each item gets what a pass of its own gives. Keys
    are sliced back to the item's length, so padded keys never enter a softmax. No padding mask is
    passed for the same reason: the causal mask alone is exact for real tokens, and it keeps SDPA on
    its causal kernel (on a 2-core CPU a masked batch of 8 prompts of 1.6K tokens took 13.4 s, the
    same batch unmasked 10.0 s, one by one 11.0 s). With ``record`` the rows' attention at every
    layer ``0..r`` is kept too (``PassItem.attention``).
    """
    device = device_of(comp.model)
    lengths = [int(ids.shape[0]) for ids, _ in inputs]
    rows = [r.to(device) for _, r in inputs]
    longest = max(lengths)
    memory.check_pass(
        comp.model,
        longest,
        max(int(r.numel()) for r in rows),
        batch=len(inputs),
        device=device,
        recorded_layers=comp.filter_layer + 1 if record else 0,
    )
    if len(inputs) == 1:
        ids = inputs[0][0][None].to(device)  # (1, T)
    else:
        ids = torch.full((len(inputs), longest), _pad_id(comp.tokenizer), dtype=torch.long)  # (B, T)
        for i, (x, _) in enumerate(inputs):
            ids[i, : x.shape[0]] = x
        ids = ids.to(device)
    stacks: list[list[torch.Tensor]] = [[] for _ in inputs]

    def observe(layer: int, cap: early_exit.LayerCapture) -> None:
        for i, r in enumerate(rows):
            q = cap.query[i : i + 1, :, r]  # (1, H, Q, D)
            k = cap.key[i : i + 1, :, : lengths[i]]  # (1, KV, T_i, D)
            stacks[i].append(row_attention(q, k, r, cap.scaling, cap.sliding_window)[0].float())  # (H, T_i)

    capture = early_exit.capture_layer(
        comp.model, ids, comp.filter_layer, attention_mask=None, observe=observe if record else None
    )
    out = []
    for i, r in enumerate(rows):
        q = capture.query[i : i + 1, :, r]  # (1, H, Q, D)
        k = capture.key[i : i + 1, :, : lengths[i]]  # (1, KV, T_i, D)
        attention = None
        if record:
            stacks[i].append(row_attention(q, k, r, capture.scaling, capture.sliding_window)[0].float())
            attention = torch.stack(stacks[i]).cpu()  # (L, H, T_i)
        out.append(PassItem(q, k, r, capture.scaling, capture.sliding_window, attention))
    return out


class Evidence:
    """What one prompt brings beyond attention: the retriever's scores and embedding similarities.

    Similarities are computed once per unit text and document, on demand (windows ask for units of
    their own).
    """

    def __init__(
        self,
        prompt: FilterPrompt,
        query: str,
        document_scores: Sequence[float] | None,
        embedder: Embedder | None,
    ) -> None:
        self.prompt = prompt
        self.query = query
        self.retriever = relative_scores(document_scores) if document_scores is not None else None  # (D,)
        self.embedder = embedder
        self._sim_doc: torch.Tensor | None = None
        self._sim_unit: dict[tuple[int, int, int], float] = {}
        self.doc_starts = [0]
        for d in prompt.documents:
            self.doc_starts.append(self.doc_starts[-1] + len(d.ids))

    def sim_doc(self) -> torch.Tensor | None:
        """(D,) similarity of each document to the query, or None without an embedding model."""
        if self.embedder is None:
            return None
        if self._sim_doc is None:
            self._sim_doc = self.embedder.similarities(self.query, [d.text for d in self.prompt.documents])
        return self._sim_doc

    def sim_units(self, units: Sequence[Unit], docs: Sequence[int]) -> torch.Tensor | None:
        """(U,) similarity of each unit's text to the query (context-token units), or None."""
        if self.embedder is None:
            return None
        keys = [(d, a, b) for (a, b), d in zip(units, docs, strict=True)]
        todo = sorted({k for k in keys if k not in self._sim_unit})
        if todo:
            texts = [unit_text(self.prompt, d, (a, b), self.doc_starts[d]) for d, a, b in todo]
            for k, s in zip(todo, self.embedder.similarities(self.query, texts).tolist(), strict=True):
                self._sim_unit[k] = s
        return torch.tensor([self._sim_unit[k] for k in keys], dtype=torch.float64)


def readout_for(comp: GemFilterCompressor, has_scores: bool) -> Readout | None:
    """The readout variant to use (None: single-layer scoring), given whether retriever scores came."""
    if comp.readouts is None:
        return None
    fused = has_scores and comp.config.prior == "auto"
    return comp.readouts.choose(retriever=fused, embeddings=comp.embedder is not None)


def layer_token_scores(comp: GemFilterCompressor, item: PassItem) -> torch.Tensor:
    """The single-layer scoring of every position of the pass. Returns (T,) float32 on the CPU."""
    cfg = comp.config.scoring
    return token_scores(item.query, item.key, item.rows, cfg, item.scaling, item.sliding_window)[0].float().cpu()


def readout_logits(
    readout: Readout,
    item: PassItem,
    positions: torch.Tensor,
    units: Sequence[Unit],
    docs: Sequence[int],
    evidence: Evidence,
    context_units: Sequence[Unit] | None = None,
) -> torch.Tensor:
    """Readout logits (U,) of ``units`` (indices into ``positions``, the pass positions of the scored tokens).

    ``docs`` are the units' document indices; ``context_units`` the same units in the prompt's
    context-token indices (for their texts; default ``units``).
    """
    assert item.attention is not None, "the pass did not record the layers' attention"
    attention = item.attention[: readout.layer + 1, :, positions]  # (L, H, N)
    doc_idx = torch.tensor(list(docs), dtype=torch.long)  # (U,)
    x, names = unit_features(
        attention,
        units,
        doc_idx,
        retriever=evidence.retriever if readout.uses_retriever else None,
        sim_unit=evidence.sim_units(context_units or units, docs) if readout.uses_embeddings else None,
        sim_doc=evidence.sim_doc() if readout.uses_embeddings else None,
    )
    if names != readout.extras:
        raise ValueError(f"readout: needs extras {list(readout.extras)} but got {list(names)}.")
    return readout.logits(x)  # (U,)


def score_pass(
    comp: GemFilterCompressor,
    prompt: FilterPrompt,
    item: PassItem,
    units: PromptUnits,
    evidence: Evidence,
    readout: Readout | None,
) -> Scores:
    """Scores of a prompt that fitted one pass: single-layer token scores or readout unit values."""
    positions = prompt.context_positions()  # (N,)
    if readout is None:
        tokens = layer_token_scores(comp, item)[positions]  # (N,)
        return Scores(tokens, unit_scores(tokens, units.units).double())
    flat = units.units
    logits = readout_logits(readout, item, positions, flat, units.documents, evidence)  # (U,)
    values = torch.exp(logits - logits.max()) if logits.numel() else logits  # (U,) in (0, 1]
    return Scores(spread(values, flat, prompt.context_tokens), logits)


def score_prompt(comp: GemFilterCompressor, prompt: FilterPrompt, units: PromptUnits, evidence: Evidence) -> Scores:
    """Score one prompt: one pass, or windows when it is longer than the model accepts."""
    readout = readout_for(comp, evidence.retriever is not None)
    limit = comp.max_positions
    if limit is not None and prompt.length > limit:
        from .windows import score_in_windows

        scorer, prefilter = _window_scorer(comp, prompt, evidence)
        tokens = score_in_windows(
            prompt, comp.window_size or limit, comp.config.scoring.query, scorer, prefilter=prefilter
        )
        return Scores(tokens, unit_scores(tokens, units.units).double())
    rows = query_positions(prompt.length, prompt.query_start, comp.config.scoring.query)
    (item,) = run_passes(comp, [(prompt.input_ids, rows)], record=readout is not None)
    return score_pass(comp, prompt, item, units, evidence, readout)


def _window_scorer(comp: GemFilterCompressor, prompt: FilterPrompt, evidence: Evidence) -> tuple[Any, Any]:
    """The ``windows.UnitScoreFn`` of this compressor (one pass per window, scored as a whole prompt is)
    and its ``windows.PrefilterFn`` (embedding similarity of each unit to the question; None without an
    embedding model)."""
    readout = readout_for(comp, evidence.retriever is not None)
    c0 = prompt.doc_offsets[0]
    # region index (context region, separators included) of each document's first token
    region_starts = [o - c0 for o in prompt.doc_offsets]
    ctx_starts = evidence.doc_starts

    def locate(unit: Unit) -> tuple[int, Unit] | None:
        """(document, unit in context-token indices) of a region unit, None for a separator."""
        for d, (rs, doc) in enumerate(zip(region_starts, prompt.documents, strict=True)):
            if rs <= unit[0] and unit[1] <= rs + len(doc.ids) and unit[1] > unit[0]:
                shift = ctx_starts[d] - rs
                return d, (unit[0] + shift, unit[1] + shift)
        return None

    def score(
        ids: torch.Tensor, rows: torch.Tensor, ctx_start: int, local: list[Unit], region: list[Unit]
    ) -> torch.Tensor:
        (item,) = run_passes(comp, [(ids, rows)], record=readout is not None)
        n = local[-1][1] if local else 0
        positions = torch.arange(ctx_start, ctx_start + n)  # (M,)
        if readout is None:
            return unit_scores(layer_token_scores(comp, item)[positions], local).double()  # (U,)
        found = [locate(u) for u in region]
        keep = [i for i, f in enumerate(found) if f is not None]
        values = torch.zeros(len(local), dtype=torch.float64)  # separators: 0
        if keep:
            logits = readout_logits(
                readout,
                item,
                positions,
                [local[i] for i in keep],
                [found[i][0] for i in keep],  # type: ignore[index]
                evidence,
                [found[i][1] for i in keep],  # type: ignore[index]
            )
            values[keep] = torch.exp(logits - logits.max())
        return values

    def prefilter(region: list[Unit]) -> torch.Tensor:
        found = [locate(u) for u in region]
        keep = [i for i, f in enumerate(found) if f is not None]
        values = torch.full((len(region),), float("-inf"), dtype=torch.float64)
        sims = evidence.sim_units([found[i][1] for i in keep], [found[i][0] for i in keep])  # type: ignore[index]
        if sims is not None and keep:
            values[keep] = sims
        return values

    return score, (prefilter if evidence.embedder is not None else None)


def select(
    comp: GemFilterCompressor,
    scores: Scores,
    units: PromptUnits,
    budget: int,
    document_scores: Sequence[float] | None,
) -> torch.Tensor:
    """Kept context-token indices (ascending) within ``budget``, per ``config.granularity`` and ``config.prior``.

    ``prior="auto"``: the readout fuses the retriever's scores itself (a learned feature); with
    single-layer scoring they are added to the token scores (``"add"``, relative scores: near-equal
    retriever scores stay near-equal). ``"share"`` and ``"add"`` apply those rules on top of any
    scoring; ``"none"`` ignores the scores.
    """
    cfg = comp.config
    mode = cfg.prior if document_scores is not None else "none"
    if mode == "auto":
        mode = "none" if comp.readouts is not None else "add"
    lengths = [sum(b - a for a, b in doc_units) for doc_units in units.per_document]  # units partition documents
    if mode == "add":
        tokens = add_prior(scores.tokens, lengths, document_scores or [], cfg.prior_weight)
        if cfg.granularity == "token":
            return select_tokens(tokens, budget)
        return select_ranked(unit_scores(tokens, units.units), units.units, budget)
    if mode == "share":
        values = scores.units
        per_doc, start = [], 0
        for doc_units in units.per_document:
            per_doc.append(values[start : start + len(doc_units)])
            start += len(doc_units)
        return share_budget(document_scores or [], units.per_document, per_doc, budget, cfg.prior_weight)
    if cfg.granularity == "token":
        return select_tokens(scores.tokens if comp.readouts is None else scores.units, budget)
    return select_ranked(scores.units, units.units, budget)


def keep_tokens(
    comp: GemFilterCompressor,
    prompt: FilterPrompt,
    tokens: torch.Tensor,
    budget: int,
    document_scores: Sequence[float] | None = None,
) -> torch.Tensor:
    """``select`` over token scores (N,) computed elsewhere (units valued by their summed tokens).

    For tools that score a prompt once and select many ways (benchmarks, calibration).
    """
    units = prompt_units(prompt, comp.config.granularity, budget)
    return select(comp, Scores(tokens, unit_scores(tokens, units.units).double()), units, budget, document_scores)


def compress_prompts(
    comp: GemFilterCompressor,
    prompts: Sequence[FilterPrompt],
    queries: Sequence[str],
    *,
    top_k: int | None | Sequence[int | None] = None,
    document_scores: Sequence[Sequence[float] | None] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[CompressionResult]:
    """Compress built prompts; the items that need a filter pass share right-padded batched passes.

    ``top_k`` is one budget for every item or one per item (None: ``config.top_k``);
    ``document_scores`` is None or, per item, its retriever scores (or None), as in ``compress``.
    Items are grouped by length (longest first) to waste little padding; results come back in input
    order and equal one-by-one calls. ``timings["filter"]`` of an item is the time of the pass it shared.
    """
    n = len(prompts)
    budgets = _budgets(comp.config.top_k, top_k, n)
    doc_scores = _document_scores(document_scores, prompts)
    check_batch_size(batch_size)
    units = [prompt_units(p, comp.config.granularity, b) for p, b in zip(prompts, budgets, strict=True)]
    evidence = [Evidence(p, q, s, comp.embedder) for p, q, s in zip(prompts, queries, doc_scores, strict=True)]
    scores: list[Scores | None] = [None] * n
    filter_time = [0.0] * n
    limit = comp.max_positions
    todo = [i for i in range(n) if budgets[i] < prompts[i].context_tokens]
    long = [i for i in todo if limit is not None and prompts[i].length > limit]
    short = sorted((i for i in todo if i not in long), key=lambda i: -prompts[i].length)
    for i in long:  # windows: one prompt at a time, memory bounded by one window
        t0 = time.perf_counter()
        scores[i] = score_prompt(comp, prompts[i], units[i], evidence[i])
        filter_time[i] = time.perf_counter() - t0
    for s in range(0, len(short), batch_size):
        group = short[s : s + batch_size]
        t0 = time.perf_counter()
        chosen = [readout_for(comp, evidence[i].retriever is not None) for i in group]
        inputs = [
            (
                prompts[i].input_ids,
                query_positions(prompts[i].length, prompts[i].query_start, comp.config.scoring.query),
            )
            for i in group
        ]
        items = run_passes(comp, inputs, record=any(r is not None for r in chosen))
        for i, item, readout in zip(group, items, chosen, strict=True):
            scores[i] = score_pass(comp, prompts[i], item, units[i], evidence[i], readout)
        elapsed = time.perf_counter() - t0
        for i in group:
            filter_time[i] = elapsed
    results = []
    for i in range(n):
        t0 = time.perf_counter()
        found = scores[i]
        if found is None:  # the budget holds the whole context: no pass
            keep = torch.arange(prompts[i].context_tokens)
            tokens = torch.ones(prompts[i].context_tokens)
            layer = None
        else:
            keep = select(comp, found, units[i], budgets[i], doc_scores[i])
            tokens = found.tokens
            layer = comp.filter_layer
        chosen_t = time.perf_counter() - t0
        result = assemble(
            prompts[i],
            queries[i],
            keep,
            tokens,
            layer,
            comp.config,
            {"tokenize": 0.0, "filter": filter_time[i], "select": chosen_t},
        )
        result.timings["total"] = filter_time[i] + chosen_t
        results.append(result)
    return results


def _pad_id(tokenizer: Any) -> int:
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            return value
    return 0


__all__ = [
    "Evidence",
    "PassItem",
    "Scores",
    "build_prompts",
    "compress_prompts",
    "device_of",
    "keep_tokens",
    "run_passes",
    "score_pass",
    "score_prompt",
    "select",
]


def _budgets(default: int, top_k: Any, n: int) -> list[int]:
    """One checked budget per item from ``top_k``: None, one int, or one int (or None) per item."""
    if top_k is None or isinstance(top_k, (str, bytes)) or not isinstance(top_k, Sequence):
        return [check_top_k(default if top_k is None else top_k)] * n
    if len(top_k) != n:
        raise ValueError(f"top_k: has {len(top_k)} budgets for {n} items; pass one int, or one per item.")
    return [check_top_k(default if k is None else k) for k in top_k]


def _document_scores(document_scores: Any, prompts: Sequence[FilterPrompt]) -> list[list[float] | None]:
    """One checked list of retriever scores (or None) per item."""
    if document_scores is None:
        return [None] * len(prompts)
    if isinstance(document_scores, (str, bytes)) or not isinstance(document_scores, Sequence):
        raise TypeError(
            f"document_scores: expected one list of scores (or None) per item, got {type(document_scores).__name__}."
        )
    if len(document_scores) != len(prompts):
        raise ValueError(
            f"document_scores: has {len(document_scores)} entries for {len(prompts)} items; pass one per item "
            "(None for an item without scores)."
        )
    return [check_document_scores(s, len(p.documents)) for s, p in zip(document_scores, prompts, strict=True)]
