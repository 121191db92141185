"""``gemfilter train-readout``: train a model's readout and write it into a profile JSON."""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any


def add_parser(sub: Any, model_options: Any, positive_int: Any) -> None:
    """Register the ``train-readout`` subcommand."""
    p = sub.add_parser(
        "train-readout",
        help="train the model's readout on public data (HotpotQA, NQ, SQuAD, needles, structured); write a profile",
        description="Builds labelled examples from the training splits (gemfilter_rag.data), runs one early-exit "
        "pass per example up to --max-layer (cached), cross-validates a readout over layers 0..r for each r, "
        "picks the earliest r within --tolerance of the best, fits every variant there and writes the profile.",
    )
    model_options(p)
    p.add_argument("--out", default="readout", help="output folder (default ./readout)")
    p.add_argument("--name", default=None, help="profile name (default: the shipped profile's, or from the model)")
    p.add_argument("--max-layer", type=int, default=None, help="deepest layer tried (default: half the model)")
    p.add_argument("--budget", type=positive_int, default=256, help="token budget judged (default 256)")
    p.add_argument("--hotpotqa", type=int, default=500, help="HotpotQA training questions (default 500)")
    p.add_argument("--nq", type=int, default=300, help="NaturalQuestions training questions (default 300)")
    p.add_argument("--squad", type=int, default=170, help="SQuAD training questions (default 170)")
    p.add_argument("--needles", type=int, default=96, help="needle probes (default 96)")
    p.add_argument(
        "--structured",
        type=int,
        default=0,
        help="synthetic structured lookups: JSON, tables, logs, code (default 0; training seeds only)",
    )
    p.add_argument(
        "--no-embeddings",
        action="store_true",
        help="train the attention-only variants (no unit is embedded; MiniLM still picks the NQ distractors)",
    )
    p.add_argument("--l2", type=float, default=1e-2, help="L2 penalty of the logistic regression")
    p.add_argument("--tolerance", type=float, default=0.01, help="answer-kept tolerance for the earliest layer")
    p.add_argument("--folds", type=positive_int, default=5, help="cross-validation folds (by question)")
    p.add_argument("--seed", type=int, default=0, help="seed of every sample")
    p.add_argument(
        "--blocks",
        nargs="+",
        default=None,
        help="feature blocks the readout reads (default: all of gemfilter_rag.features.ALL_BLOCKS, the "
        "lexical and key_mass blocks included; 'mass mean doc_mass' is the first readouts' set)",
    )
    p.add_argument("--no-ablations", action="store_true", help="skip cross-validating the block ablations")
    p.add_argument(
        "--cached-only",
        action="store_true",
        help="fit on the examples whose features are cached already (no pass: re-fitting takes seconds)",
    )
    p.add_argument(
        "--cached-pass",
        action="store_true",
        help="train the readout of the chunk cache's path (GemFilterCompressor(cache=...)) on that path's own "
        "records, and store it beside the model's joint-pass readout (ReadoutSet.cached) in the profile",
    )
    p.add_argument(
        "--layers", type=int, nargs="+", default=None, help="candidate exit layers (default: 0..--max-layer)"
    )
    p.add_argument(
        "--profile-embeddings",
        choices=["none", "default", "auto"],
        default="none",
        help="what from_pretrained loads beside the model by default: 'none' (one model; the default), "
        "'default' (all-MiniLM-L6-v2 for the embedding variants), 'auto' (MiniLM when a variant reads it)",
    )


def run(args: argparse.Namespace, usage_error: type[Exception]) -> int:
    """Train, print the per-layer table, write ``<out>/<name>.json``."""
    from tqdm import tqdm

    from ..compressor import GemFilterCompressor
    from ..embeddings import minilm
    from ..features import LAYER_BLOCKS
    from ..profiles import Profile, find_profile, fingerprint
    from ..readout import ReadoutSet
    from . import BLOCKS, CACHED_BLOCKS, Sizes, build_examples, interleave, train_readout

    if not 0 <= args.tolerance < 1:
        raise usage_error(f"--tolerance: {args.tolerance} must be within [0, 1)")
    if args.l2 < 0:
        raise usage_error(f"--l2: {args.l2} must be >= 0")
    if not 0 <= args.structured <= 10_000:
        raise usage_error(f"--structured: {args.structured} must be within 0..10000 (the training seeds)")
    blocks = tuple(args.blocks) if args.blocks else (CACHED_BLOCKS if args.cached_pass else BLOCKS)
    unknown = [b for b in blocks if b not in BLOCKS]
    if unknown:
        raise usage_error(f"--blocks: unknown {unknown}; choose from {list(BLOCKS)}")
    if args.cached_pass and any(b in LAYER_BLOCKS for b in blocks):
        raise usage_error(
            f"--blocks: {[b for b in blocks if b in LAYER_BLOCKS]} read hidden states, which --cached-pass does not "
            f"record; leave them out (default with --cached-pass: {list(CACHED_BLOCKS)})"
        )
    comp = GemFilterCompressor.from_pretrained(args.model, device=args.device, scorer="layer")
    shipped = find_profile(comp.model.config)
    joint = ReadoutSet.from_dict(shipped.readout) if shipped is not None and shipped.readout else None
    if args.cached_pass and joint is None:
        raise usage_error(
            "--cached-pass: this model's profile has no joint-pass readout to store the cache-mode one beside; "
            "train that first (gemfilter train-readout without --cached-pass)"
        )
    max_layer = args.max_layer if args.max_layer is not None else max(0, comp.num_layers // 2)
    if not 0 <= max_layer < comp.num_layers:
        raise usage_error(f"--max-layer: {max_layer} is outside this model's layers; use 0..{comp.num_layers - 1}")
    if args.layers is not None and not all(0 <= v <= max_layer for v in args.layers):
        raise usage_error(f"--layers: {args.layers} must lie within 0..--max-layer ({max_layer})")
    # MiniLM picks each NQ question's distractors (its nearest gold passages) whatever the readout reads;
    # the readout's features embed every unit only for the embedding variants
    retriever = minilm() if args.nq or not args.no_embeddings else None
    embedder = None if args.no_embeddings else retriever
    sizes = Sizes(
        hotpotqa=args.hotpotqa,
        nq=args.nq,
        squad=args.squad,
        needles=args.needles,
        structured=args.structured,
    )
    examples = interleave(build_examples(comp.tokenizer, retriever, sizes, seed=args.seed))
    readouts, report = train_readout(
        comp,
        examples,
        embedder=embedder,
        max_layer=max_layer,
        layers=args.layers,
        budget=args.budget,
        l2=args.l2,
        tolerance=args.tolerance,
        folds=args.folds,
        seed=args.seed,
        blocks=blocks,
        ablations={} if args.no_ablations else None,
        cached_only=args.cached_only,
        mode="cached" if args.cached_pass else "joint",
        progress=lambda it: tqdm(it, desc="features", unit="question", file=sys.stderr),
        log=lambda line: print(line, file=sys.stderr),
    )
    command = (
        "gemfilter " + " ".join(sys.argv[1:]) if Path(sys.argv[0]).name == "gemfilter" else "gemfilter train-readout"
    )
    readouts = replace(readouts, provenance={**readouts.provenance, "command": command})
    if args.cached_pass and shipped is not None and joint is not None:
        profile = replace(shipped, readout=replace(joint, cached=readouts).to_dict())
        return _write(profile, args.out, args.name, report, f"cache-mode readout at layer {readouts.layer}")
    if joint is not None and joint.cached is not None:
        print("note: the profile's cache-mode readout is dropped (it was trained beside the old readout); "
              "train it again with --cached-pass", file=sys.stderr)  # fmt: skip
    source = (
        f"trained: gemfilter train-readout, {readouts.provenance['date']}, readout over layers 0..{readouts.layer} "
        f"chosen by cross-validated answer survival at {args.budget} tokens"
    )
    if shipped is not None:
        profile = replace(
            shipped.with_defaults(filter_layer=readouts.layer),
            readout=readouts.to_dict(),
            source=source,
            embeddings=args.profile_embeddings,
        )
    else:
        profile = Profile(
            name=args.name or Path(str(args.model)).stem,
            match=fingerprint(comp.model.config),
            defaults={"filter_layer": readouts.layer},
            source=source,
            readout=readouts.to_dict(),
            embeddings=args.profile_embeddings,
        )
    return _write(profile, args.out, args.name, report, f"chosen layer {readouts.layer}")


def _write(profile: Any, out_dir: str, name: str | None, report: Any, what: str) -> int:
    """Save ``profile`` (renamed to ``name`` when given) and its training report into ``out_dir``."""
    if name:
        profile = replace(profile, name=name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9.]+", "-", profile.name.lower()).strip("-") or "model"
    profile.save(out / f"{slug}.json")
    (out / f"{slug}.report.json").write_text(json.dumps(report.__dict__, indent=1, default=str) + "\n")
    print(f"{what}; wrote {out / (slug + '.json')}", file=sys.stderr)
    return 0
