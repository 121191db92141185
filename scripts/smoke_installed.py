"""Smoke test of the installed packages, run by scripts/check_wheels.py in a fresh virtual environment.

It runs from a folder outside the checkout and checks that every package is imported from that
environment, that the default model loads with its shipped, trained profile, and that one compress
goes through the core and through each adapter whose package was built. It uses only what a user's
``pip install`` gives: no test helpers, no file of the checkout.

    python smoke_installed.py --version 0.1.0 --checkout /path/to/repo --integration langchain=langchain-gemfilter
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import inspect
import sys
import time
from pathlib import Path

DOCUMENTS = [
    "The Eiffel Tower was completed in 1889 for the World's Fair. It is 330 metres tall.",
    "Bananas are berries, botanically speaking. Strawberries, on the other hand, are not.",
    "Gustave Eiffel's company designed and built the tower. Parisians first called it an eyesore.",
]
QUESTION = "When was the Eiffel Tower completed?"
BUDGET = 24


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(f"smoke: FAILED: {message}")


def installed_here(module: object, checkout: Path) -> Path:
    """The module's file, checked to lie in this environment and not in the checkout."""
    name, path = module.__name__, Path(module.__file__).resolve()
    check(path.is_relative_to(Path(sys.prefix).resolve()), f"{name} imported from {path}, outside {sys.prefix}")
    check(not path.is_relative_to(checkout), f"{name} imported from the checkout: {path}")
    return path


def check_version(distribution: str, version: str) -> None:
    found = importlib.metadata.version(distribution)
    check(found == version, f"{distribution} {found} installed, expected {version}")
    print(f"smoke: {distribution} {found}")


def core(checkout: Path, version: str):  # noqa: ANN201 - the compressor, typed by the installed package
    import gemfilter_rag
    from gemfilter_rag import GemFilterCompressor

    where = installed_here(gemfilter_rag, checkout)
    check(gemfilter_rag.__version__ == version, f"gemfilter_rag.__version__ is {gemfilter_rag.__version__}")
    check_version("gemfilter-rag", version)
    print(f"smoke: gemfilter_rag from {where.parent}")

    start = time.perf_counter()
    compressor = GemFilterCompressor.from_pretrained()
    profile = compressor.profile
    check(profile is not None, "the default model matched no shipped profile")
    check(profile.readout is not None, f"the default model's profile {profile.name} carries no trained readout")
    check(compressor.readouts is not None, "the default compressor does not use the trained readout")
    shipped = where.parent / "profiles" / "smollm2-135m-instruct.json"
    check(shipped.is_file(), f"no shipped profile at {shipped}")
    seconds = time.perf_counter() - start
    print(f"smoke: default model loaded in {seconds:.1f}s, profile {profile.name!r} ({profile.source})")

    result = compressor.compress(DOCUMENTS, QUESTION, top_k=BUDGET)
    check(0 < result.compressed_tokens <= BUDGET, f"core compress kept {result.compressed_tokens} tokens")
    check("1889" in result.text, f"core compress lost the answer: {result.text!r}")
    print(f"smoke: core compress {result.original_tokens} -> {result.compressed_tokens} tokens")
    return compressor


def langchain(compressor, checkout: Path) -> None:  # noqa: ANN001
    import langchain_gemfilter
    from langchain_core.documents import Document
    from langchain_gemfilter import GemFilterDocumentCompressor

    installed_here(langchain_gemfilter, checkout)
    adapter = GemFilterDocumentCompressor(compressor=compressor, top_k=BUDGET)
    docs = [Document(page_content=text, id=str(i)) for i, text in enumerate(DOCUMENTS)]
    kept = adapter.compress_documents(docs, QUESTION)
    check(bool(kept) and all("gemfilter" in d.metadata for d in kept), f"LangChain adapter returned {kept!r}")
    check(any("1889" in d.page_content for d in kept), "LangChain adapter lost the answer")
    print(f"smoke: LangChain adapter kept {len(kept)} of {len(docs)} documents")


def llama_index(compressor, checkout: Path) -> None:  # noqa: ANN001
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
    from llama_index.postprocessor import gemfilter

    installed_here(gemfilter, checkout)
    adapter = gemfilter.GemFilterNodePostprocessor(compressor=compressor, top_k=BUDGET)
    nodes = [NodeWithScore(node=TextNode(text=text, id_=str(i)), score=1.0) for i, text in enumerate(DOCUMENTS)]
    kept = adapter.postprocess_nodes(nodes, query_bundle=QueryBundle(QUESTION))
    check(bool(kept) and all("gemfilter" in n.node.metadata for n in kept), f"LlamaIndex adapter returned {kept!r}")
    check(any("1889" in n.node.get_content() for n in kept), "LlamaIndex adapter lost the answer")
    print(f"smoke: LlamaIndex postprocessor kept {len(kept)} of {len(nodes)} nodes")


def haystack(compressor, checkout: Path) -> None:  # noqa: ANN001
    """The Haystack component, found under ``haystack_integrations.components.*.gemfilter``: a class
    with ``run(documents=..., query=...)`` that takes ``compressor=``, warmed up, then run once."""
    import haystack_integrations.components as components
    from haystack import Document

    # <kind> is a namespace package (no __init__.py), which pkgutil does not list: look for the folders.
    kinds = sorted(
        {init.parent.parent.name for root in components.__path__ for init in Path(root).glob("*/gemfilter/__init__.py")}
    )
    modules = [importlib.import_module(f"{components.__name__}.{kind}.gemfilter") for kind in kinds]
    check(bool(modules), "no haystack_integrations.components.<kind>.gemfilter module is installed")
    ran = 0
    for module in modules:
        installed_here(module, checkout)
        for name in getattr(module, "__all__", []):
            cls = getattr(module, name)
            run = getattr(cls, "run", None)
            if not inspect.isclass(cls) or run is None:
                continue
            init = inspect.signature(cls.__init__).parameters  # Haystack's component metaclass hides cls's own
            if "compressor" not in init:
                continue
            params = inspect.signature(run).parameters
            query_arg = next((q for q in ("query", "question") if q in params), None)
            if "documents" not in params or query_arg is None:
                continue
            budget = {"top_k": BUDGET} if "top_k" in init else {}
            component = cls(compressor=compressor, **budget)
            if hasattr(component, "warm_up"):
                component.warm_up()
            docs = [Document(content=text, id=str(i)) for i, text in enumerate(DOCUMENTS)]
            out = component.run(documents=docs, **{query_arg: QUESTION})
            kept = out.get("documents", [])
            check(any("1889" in (d.content or "") for d in kept), f"Haystack {name} lost the answer: {out!r}")
            print(f"smoke: Haystack {module.__name__}.{name} kept {len(kept)} of {len(docs)} documents")
            ran += 1
    check(ran > 0, f"no component in {[m.__name__ for m in modules]} takes compressor= and runs on documents + query")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True, help="the version every package must have")
    parser.add_argument("--checkout", required=True, type=Path, help="the repository, which nothing may come from")
    parser.add_argument(
        "--integration", action="append", default=[], help="FOLDER=DISTRIBUTION of an integration that was built"
    )
    args = parser.parse_args()
    checkout = args.checkout.resolve()
    check(not Path.cwd().resolve().is_relative_to(checkout), f"run from inside the checkout ({Path.cwd()})")
    check(all(not Path(p or ".").resolve().is_relative_to(checkout) for p in sys.path), "the checkout is on sys.path")
    built = dict(item.split("=", 1) for item in args.integration)

    start = time.perf_counter()
    compressor = core(checkout, args.version)
    for distribution in built.values():
        check_version(distribution, args.version)
    runners = {"langchain": langchain, "llama_index": llama_index, "haystack": haystack}
    for folder, runner in runners.items():
        if folder not in built:
            print(f"smoke: skipped {folder}: integrations/{folder} is absent")
            continue
        runner(compressor, checkout)
    for folder in sorted(set(built) - set(runners)):
        print(f"smoke: integrations/{folder} was built and installed; this smoke test has no compress for it yet")
    print(f"smoke: passed in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
