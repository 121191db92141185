"""Per-model calibration: which layer and scoring find a needle within a token budget.

One forward pass per probe captures the query/key of every layer (``capture.capture_layers``);
each scoring option then scores every layer from the same capture. For every (option, layer) we
measure the needle's token recall (share of its tokens among the ``budget`` best) and its sentence
recall (whether sentence selection keeps the whole needle sentence), and the filter cost
``(layer + 1) / num_layers`` (share of the model that runs).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import capture
from .config import GemFilterConfig, ScoringConfig
from .needles import Probe
from .profiles import Profile, fingerprint
from .prompt import FilterPrompt, build_prompt
from .scoring import query_positions, token_scores, top_k_sorted
from .selection import MAX_SENTENCE_TOKENS, select_units, token_units
from .sentences import sentence_spans

SCORING_OPTIONS: dict[str, ScoringConfig] = {
    "paper": ScoringConfig.paper(),
    "question_softmax_max7": ScoringConfig(query="question", softmax=True, heads="sum", pool="max", pool_width=7),
    "last_softmax_max7": ScoringConfig(query="last", softmax=True, heads="sum", pool="max", pool_width=7),
    "question_raw_max7": ScoringConfig(query="question", softmax=False, heads="sum", pool="max", pool_width=7),
}
"""The scoring options every calibration compares (name -> config)."""


def query_rows(prompt: FilterPrompt, query: str | int) -> torch.Tensor:
    """Prompt positions whose attention scores: the last token, the question onward, or the last n. (Q,)"""
    return query_positions(prompt.length, prompt.query_start, query)


def span_tokens(starts: Sequence[int], ends: Sequence[int], span: tuple[int, int]) -> torch.Tensor:
    """Indices of the tokens whose character span overlaps ``span`` (start, end). (M,)"""
    a, b = span
    hits = [i for i, (s, e) in enumerate(zip(starts, ends, strict=True)) if s < b and e > a]
    return torch.tensor(hits, dtype=torch.long)


def needle_recall(
    scores: torch.Tensor, needle: torch.Tensor, units: Sequence[tuple[int, int]], budget: int
) -> tuple[float, bool]:
    """(token recall, whole sentence kept) of the needle tokens under ``budget``.

    scores: (N,) token scores; needle: (M,) needle token indices; units: sentence units.
    """
    if needle.numel() == 0:
        raise ValueError("needle: has no tokens; the probe's needle span is empty.")
    top = top_k_sorted(scores, budget)
    token = float(torch.isin(needle, top).float().mean())
    kept = select_units(scores, units, budget)
    return token, bool(torch.isin(needle, kept).all())


@dataclass
class CalibrationReport:
    """Recall per scoring option and layer, averaged over probes, and the choice made from it."""

    num_layers: int
    budget: int
    token_recall: dict[str, list[float]]
    sentence_recall: dict[str, list[float]]
    probes: int
    lengths: list[int] = field(default_factory=list)
    depths: list[float] = field(default_factory=list)
    needles: int = 0
    by_length: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    """length -> option -> sentence recall per layer."""
    seconds: float = 0.0

    def cost(self, layer: int) -> float:
        """Filter cost of a layer: the share of the model's layers that run, (layer + 1) / L."""
        return (layer + 1) / self.num_layers

    def choose(self, tolerance: float = 0.02, metric: str = "sentence") -> tuple[str, int]:
        """(option, layer): the earliest layer within ``tolerance`` of the best recall of any option."""
        table = self.sentence_recall if metric == "sentence" else self.token_recall
        best = max(max(v) for v in table.values())
        for layer in range(self.num_layers):
            near = [
                (table[o][layer], self.token_recall[o][layer], o) for o in table if table[o][layer] >= best - tolerance
            ]
            if near:
                return max(near)[2], layer
        raise AssertionError("unreachable: the best layer is always within tolerance")  # pragma: no cover

    def to_profile(
        self, name: str, model_config: Any, *, tolerance: float = 0.02, top_k: int = 1024, command: str = ""
    ) -> Profile:
        """A profile with the chosen layer and scoring, recording how it was measured."""
        option, layer = self.choose(tolerance)
        date = _dt.date.today().isoformat()
        measurements = {
            "date": date,
            "command": command,
            "budget": self.budget,
            "probes": self.probes,
            "lengths": self.lengths,
            "depths": self.depths,
            "needles": self.needles,
            "tolerance": tolerance,
            "chosen": {
                "option": option,
                "layer": layer,
                "cost": round(self.cost(layer), 4),
                "sentence_recall": round(self.sentence_recall[option][layer], 4),
                "token_recall": round(self.token_recall[option][layer], 4),
            },
            "best_per_option": {
                o: {
                    "layer": int(max(range(self.num_layers), key=lambda i: (v[i], -i))),
                    "sentence_recall": round(max(v), 4),
                    "token_recall": round(max(self.token_recall[o]), 4),
                }
                for o, v in self.sentence_recall.items()
            },
            "sentence_recall": {o: [round(x, 4) for x in v] for o, v in self.sentence_recall.items()},
            "token_recall": {o: [round(x, 4) for x in v] for o, v in self.token_recall.items()},
            "seconds": round(self.seconds, 1),
        }
        source = (
            f"measured: gemfilter calibrate, {date}, {self.probes} needle probes "
            f"(lengths {self.lengths}, {len(self.depths)} depths, {self.needles} needles), budget "
            f"{self.budget}: {option} at layer {layer} keeps the needle sentence in "
            f"{self.sentence_recall[option][layer]:.0%} of probes"
        )
        return Profile(
            name=name,
            match=fingerprint(model_config),
            defaults={
                "filter_layer": layer,
                "scoring": asdict(SCORING_OPTIONS.get(option, ScoringConfig())),
                "granularity": "sentence",
                "top_k": top_k,
            },
            source=source,
            measurements=measurements,
        )


def calibrate(
    model: Any,
    tokenizer: Any,
    probes: Sequence[Probe],
    *,
    budget: int = 256,
    options: dict[str, ScoringConfig] | None = None,
    layers: Sequence[int] | None = None,
    config: GemFilterConfig | None = None,
    progress: bool = True,
    checkpoint: Callable[[CalibrationReport], None] | None = None,
) -> CalibrationReport:
    """Measure needle recall at ``budget`` for every layer and scoring option over ``probes``.

    ``checkpoint``, when given, receives the report over the probes done so far after each probe
    (so that a long run that is cut off still leaves its measurements).
    """
    import time

    if not probes:
        raise ValueError("probes: is empty; build some with needles.make_probes(...).")
    options = dict(options or SCORING_OPTIONS)
    cfg = config or GemFilterConfig()
    n_layers = len(capture.decoder_layers(model))
    layer_list = list(range(n_layers)) if layers is None else sorted(set(layers))
    sums_tok = {o: [0.0] * n_layers for o in options}
    sums_sent = {o: [0.0] * n_layers for o in options}
    by_len: dict[int, dict[str, list[float]]] = {}
    count_len: dict[int, int] = {}
    device = next(model.parameters()).device
    t0 = time.perf_counter()
    iterator: Any = probes
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(probes, desc="calibrating", unit="probe")
    done: list[Probe] = []

    def report() -> CalibrationReport:
        n = len(done)
        return CalibrationReport(
            num_layers=n_layers,
            budget=budget,
            token_recall={o: [v / n for v in vals] for o, vals in sums_tok.items()},
            sentence_recall={o: [v / n for v in vals] for o, vals in sums_sent.items()},
            probes=n,
            lengths=sorted({p.length for p in done}),
            depths=sorted({p.depth for p in done}),
            needles=len({p.question for p in done}),
            by_length={str(k): {o: [x / count_len[k] for x in v] for o, v in d.items()} for k, d in by_len.items()},
            seconds=time.perf_counter() - t0,
        )

    for probe in iterator:
        prompt = build_prompt(
            tokenizer,
            [probe.context],
            probe.question,
            separator=cfg.separator,
            template=cfg.template,
            use_chat_template=cfg.use_chat_template,
        )
        doc = prompt.documents[0]
        needle = span_tokens(doc.starts, doc.ends, probe.needle_span)
        units = token_units(doc.ends, sentence_spans(doc.text), 0, MAX_SENTENCE_TOKENS)
        ctx = prompt.context_positions().to(device)  # (N,)
        caps = capture.capture_layers(model, prompt.input_ids[None].to(device), layer_list)
        lens = by_len.setdefault(probe.length, {o: [0.0] * n_layers for o in options})
        count_len[probe.length] = count_len.get(probe.length, 0) + 1
        for layer, cap in caps.items():
            for name, opt in options.items():
                rows = query_rows(prompt, opt.query).to(device)  # (Q,)
                scores = (
                    token_scores(cap.query[:, :, rows], cap.key, rows, opt, cap.scaling, cap.sliding_window)[0, ctx]
                    .float()
                    .cpu()
                )  # (N,)
                tok, sent = needle_recall(scores, needle, units, budget)
                sums_tok[name][layer] += tok
                sums_sent[name][layer] += float(sent)
                lens[name][layer] += float(sent)
        del caps
        done.append(probe)
        if checkpoint is not None:
            checkpoint(report())
    return report()


def plot_report(report: CalibrationReport, path: str | Path, title: str = "") -> Path:
    """Write a PNG: needle recall per layer for each option (sentence solid, token dashed) and the cost."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("plotting needs matplotlib: pip install 'gemfilter-rag[plots]'") from err
    layers = list(range(report.num_layers))
    fig, ax = plt.subplots(figsize=(9, 5))
    for i, option in enumerate(report.sentence_recall):
        color = f"C{i}"
        ax.plot(layers, report.sentence_recall[option], "-", color=color, label=f"{option} (sentence)")
        ax.plot(layers, report.token_recall[option], "--", color=color, alpha=0.6, label=f"{option} (tokens)")
    ax.plot(layers, [report.cost(i) for i in layers], ":", color="black", label="cost (r+1)/L")
    option, layer = report.choose()
    ax.axvline(layer, color="grey", lw=0.8)
    ax.set_xlabel("filter layer")
    ax.set_ylabel(f"needle recall at {report.budget} tokens / cost")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title or f"calibration: chosen {option} at layer {layer}")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
