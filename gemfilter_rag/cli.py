"""The ``gemfilter`` command: ``compress``, ``explain``, ``calibrate``, ``train-readout`` and ``serve``."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

GRANULARITIES = ("token", "sentence", "document")


class UsageError(Exception):
    """Bad input from the command line: reported on stderr with exit code 2."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        help="model directory, .gguf file or cached hub id (default: the embedded SmolLM2-135M-Instruct)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when available)")


def _compress_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help="documents, one per file ('-' reads stdin)")
    p.add_argument("--query", "-q", required=True, help="the question the context must answer")
    p.add_argument("--top-k", type=_positive_int, default=None, help="token budget (default: the profile's)")
    p.add_argument("--granularity", choices=GRANULARITIES, default=None, help="unit of selection")
    p.add_argument("--layer", type=int, default=None, help="filter layer (default: the profile's)")
    p.add_argument(
        "--window", type=_positive_int, default=None, help="longest filter pass in tokens (default: the profile's)"
    )
    p.add_argument("--profile", default=None, help="a profile JSON to use instead of the matching shipped one")
    p.add_argument(
        "--scores", default=None, help="comma-separated retriever scores, one per FILE (higher = more relevant)"
    )
    p.add_argument(
        "--cache-file",
        default=None,
        help="a chunk-cache SQLite file (made if missing): documents seen in an earlier call are not encoded again",
    )
    _model_options(p)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``gemfilter`` command."""
    parser = argparse.ArgumentParser(prog="gemfilter", description="GemFilter context compression for RAG.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compress", help="compress documents for a query and print the kept context")
    _compress_options(p)
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")

    p = sub.add_parser("calibrate", help="measure needle recall per layer and scoring; write a profile and a plot")
    _model_options(p)
    p.add_argument("--budget", type=_positive_int, default=256, help="token budget of the probes (default 256)")
    p.add_argument("--out", default="calibration", help="output folder (default ./calibration)")
    p.add_argument("--lengths", type=_positive_int, nargs="+", default=[2048, 4096], help="probe lengths in tokens")
    p.add_argument(
        "--depths", type=_positive_int, default=5, help="number of needle depths (midpoints of equal bins of 0..1)"
    )
    p.add_argument("--needles", type=_positive_int, default=8, help="number of different needles (max 10)")
    p.add_argument("--tolerance", type=float, default=0.02, help="recall tolerance for the earliest layer")
    p.add_argument("--name", default=None, help="profile name (default: from the model)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG plot")

    p = sub.add_parser("explain", help="write an HTML page showing what was kept and why")
    _compress_options(p)
    p.add_argument("--out", "-o", default="gemfilter-explain.html", help="HTML file to write")

    from .training.command import add_parser

    add_parser(sub, _model_options, _positive_int)

    from .serve.command import add_arguments

    p = sub.add_parser("serve", help="serve compression over HTTP (pip install 'gemfilter-rag[serve]')")
    add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 2 bad input, 1 other failure)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "compress":
            return _compress(args)
        if args.command == "calibrate":
            return _calibrate(args)
        if args.command == "train-readout":
            from .training.command import run as train

            return train(args, UsageError)
        if args.command == "serve":
            from .serve.command import run

            return run(args)
        return _explain(args)
    except UsageError as err:
        print(f"gemfilter {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"gemfilter {args.command}: error: {err}", file=sys.stderr)
        return 2
    except ImportError as err:
        print(f"gemfilter {args.command}: error: {err}", file=sys.stderr)
        return 1


def _read_documents(files: Sequence[str]) -> list[str]:
    docs = []
    for name in files:
        if name == "-":
            docs.append(sys.stdin.read())
            continue
        path = Path(name)
        if not path.is_file():
            raise UsageError(f"FILE: {name} does not exist or is not a file")
        try:
            docs.append(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise UsageError(f"FILE: {name} is not UTF-8 text") from None
    return docs


def _parse_scores(text: str | None, n: int) -> list[float] | None:
    if text is None:
        return None
    try:
        scores = [float(x) for x in text.split(",")]
    except ValueError:
        raise UsageError(f"--scores: {text!r} is not a comma-separated list of numbers") from None
    if len(scores) != n or not all(math.isfinite(s) for s in scores):
        raise UsageError(f"--scores: expected {n} finite numbers (one per FILE), got {text!r}")
    return scores


def _check_query(query: str) -> None:
    if not query.strip():
        raise UsageError("--query: is empty; pass the question the context must answer")


def _compressor(args: argparse.Namespace) -> Any:
    from .compressor import GemFilterCompressor

    options: dict[str, Any] = {}
    if args.granularity:
        options["granularity"] = args.granularity
    if args.layer is not None:
        options["filter_layer"] = args.layer
    if args.window is not None:
        options["window"] = args.window
    if args.profile is not None:
        if not Path(args.profile).is_file():
            raise UsageError(f"--profile: {args.profile} does not exist")
        options["profile"] = args.profile
    cache_file = getattr(args, "cache_file", None)
    if cache_file is not None:
        from .chunk_cache import ChunkCache, cache_arguments

        options["cache"] = ChunkCache(**(cache_arguments(None, cache_file, name="--cache-{}") or {}))
    return GemFilterCompressor.from_pretrained(args.model, device=args.device, **options)


def _run_compress(args: argparse.Namespace) -> Any:
    _check_query(args.query)
    docs = _read_documents(args.files)
    scores = _parse_scores(args.scores, len(docs))
    comp = _compressor(args)
    kwargs: dict[str, Any] = {"top_k": args.top_k}
    if scores is not None:
        kwargs["document_scores"] = scores
    return comp.compress(docs, args.query, **kwargs)


def _compress(args: argparse.Namespace) -> int:
    result = _run_compress(args)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(result.text)
    print(format_stats(result, args.files), file=sys.stderr)
    return 0


def format_stats(result: Any, names: Sequence[str]) -> str:
    """Human-readable statistics of a result: totals, then one line per document."""
    t = result.timings
    lines = [
        f"--- kept {result.compressed_tokens}/{result.original_tokens} tokens (ratio {result.ratio:.1f}x), "
        f"layer {result.filter_layer}, granularity {result.granularity}, "
        f"{t.get('total', 0.0):.2f} s (filter {t.get('filter', 0.0):.2f} s)"
    ]
    for doc, name in zip(result.documents, names, strict=False):
        lines.append(
            f"    {name}: kept {doc.kept_tokens}/{doc.original_tokens} tokens, score share {doc.score_share:.2f}"
        )
    return "\n".join(lines)


def _explain(args: argparse.Namespace) -> int:
    result = _run_compress(args)
    out = Path(args.out)
    out.write_text(result.to_html(), encoding="utf-8")
    print(f"wrote {out} (kept {result.compressed_tokens}/{result.original_tokens} tokens)", file=sys.stderr)
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from .calibration import calibrate, plot_report
    from .data import essays_haystack
    from .loading import load_model
    from .needles import NEEDLES, make_probes

    if args.needles > len(NEEDLES):
        raise UsageError(f"--needles: at most {len(NEEDLES)} needles ship; got {args.needles}")
    if not 0 <= args.tolerance < 1:
        raise UsageError(f"--tolerance: {args.tolerance} must be within [0, 1)")
    model, tokenizer = load_model(args.model, device=args.device)
    depths = [round((i + 0.5) / args.depths, 4) for i in range(args.depths)]  # midpoints of equal bins
    probes = make_probes(tokenizer, essays_haystack(), args.lengths, depths, NEEDLES[: args.needles])
    limit = getattr(model.config.get_text_config(), "max_position_embeddings", None)
    if limit and max(args.lengths) + 128 > limit:
        raise UsageError(f"--lengths: {max(args.lengths)} tokens do not fit this model's {limit} positions")
    name = args.name or _model_name(args.model, model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def checkpoint(partial: Any) -> None:
        (out / "partial.json").write_text(json.dumps(asdict(partial)) + "\n")

    report = calibrate(model, tokenizer, probes, budget=args.budget, checkpoint=checkpoint)
    command = "gemfilter " + " ".join(sys.argv[1:]) if argv_is_cli() else "gemfilter calibrate"
    profile = report.to_profile(name, model.config, tolerance=args.tolerance, command=command)
    slug = re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-") or "model"
    profile.save(out / f"{slug}.json")
    print(_table(report), file=sys.stderr)
    print(f"chosen: {profile.measurements['chosen']}; wrote {out / (slug + '.json')}", file=sys.stderr)
    if not args.no_plot:
        try:
            plot_report(report, out / f"{slug}.png", title=f"{name}: needle recall at {args.budget} tokens")
        except ImportError as err:
            print(f"gemfilter calibrate: no plot: {err}", file=sys.stderr)
    return 0


def argv_is_cli() -> bool:
    """Whether this process was started as the ``gemfilter`` command (so sys.argv is its command line)."""
    return Path(sys.argv[0]).name in ("gemfilter", "cli.py") or sys.argv[0].endswith("gemfilter_rag.cli")


def _model_name(arg: str | None, model: Any) -> str:
    if arg is None:
        return "SmolLM2-135M-Instruct"
    return Path(str(arg)).stem or str(getattr(model.config, "model_type", "model"))


def _table(report: Any) -> str:
    opts = list(report.sentence_recall)
    head = "layer  cost  " + "  ".join(f"{o[:22]:>22}" for o in opts)
    rows = [head, "       " + "      " + "  ".join(f"{'sent / tok':>22}" for _ in opts)]
    for i in range(report.num_layers):
        cells = "  ".join(f"{report.sentence_recall[o][i]:>10.2f} / {report.token_recall[o][i]:<9.2f}" for o in opts)
        rows.append(f"{i:>5}  {report.cost(i):.2f}  {cells}")
    return "\n".join(rows)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
