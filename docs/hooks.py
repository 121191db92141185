"""MkDocs hooks of the documentation site (``hooks:`` in mkdocs.yml); not part of the package.

- ``on_files``: ``benchmarks/README.md`` and the plots under ``benchmarks/results/`` stay where they are
  in the repository and are built into the site at the same paths, so that a page links to them as
  ``/benchmarks/README.md``: GitHub resolves that from the repository root, MkDocs from ``docs_dir``
  (``validation.links.absolute_links: relative_to_docs``), and a broken one fails ``--strict``.
- ``FieldDescriptions`` (a griffe extension, in mkdocs.yml): a pydantic field's
  ``Field(description=...)`` is its docstring, so that the adapters' and the service's fields are
  documented on their class's page like dataclass fields.
- ``on_page_markdown``: every ``::: identifier`` of a page is loaded with griffe, as mkdocstrings
  loads it, and each public class, function, method or property it documents that has no docstring
  is logged as a warning, so that ``mkdocs build --strict`` fails (mkdocstrings itself silently leaves
  such members out).
"""

from __future__ import annotations

import ast
import logging
import re
from functools import cache
from pathlib import Path
from typing import Any

import griffe
import yaml

log = logging.getLogger("mkdocs.hooks.docstrings")

ROOT = Path(__file__).resolve().parent.parent
#: Repository files built into the site at their own paths (globs relative to the repository root).
EXTERNAL = ("benchmarks/README.md", "benchmarks/results/*.png")

# `::: identifier` at the start of a line, then its indented YAML options, if any.
_DIRECTIVE = re.compile(r"^::: *(?P<ident>[\w.]+) *\n(?P<options>(?:[ \t]+.*\n?|\n)*)", re.MULTILINE)


class FieldDescriptions(griffe.Extension):
    """Use ``description=`` of a class attribute's ``Field(...)`` (pydantic) as its docstring."""

    def on_attribute_instance(self, *, node: Any, attr: griffe.Attribute, agent: Any, **kwargs: Any) -> None:
        """Read the description from the attribute's ``x: T = Field(..., description="...")``."""
        if attr.docstring is not None or attr.parent is None or not attr.parent.is_class:
            return
        call = getattr(node, "value", None)
        if not isinstance(call, ast.Call) or getattr(call.func, "id", getattr(call.func, "attr", None)) != "Field":
            return
        for keyword in call.keywords:
            if keyword.arg == "description":
                try:
                    text = ast.literal_eval(keyword.value)
                except ValueError:
                    return
                if isinstance(text, str) and text.strip():
                    attr.docstring = griffe.Docstring(text, lineno=keyword.value.lineno, parent=attr)
                return


def documented_identifiers(markdown: str) -> list[tuple[str, list[str] | None]]:
    """The ``(identifier, members)`` of each ``::: identifier`` in ``markdown``; ``members`` is its
    ``options: members:`` list, or None when it has none (every public member)."""
    found = []
    for match in _DIRECTIVE.finditer(markdown):
        options = yaml.safe_load(match["options"]) if match["options"].strip() else None
        members = ((options or {}).get("options") or {}).get("members")
        found.append((match["ident"], list(members) if isinstance(members, list) else None))
    return found


def _public(name: str) -> bool:
    return not name.startswith("_")


def _checked(obj: Any) -> bool:
    """Classes, functions, methods and properties are checked; plain attributes and modules are not."""
    return obj.is_class or obj.is_function or (obj.is_attribute and "property" in obj.labels)


def missing_docstrings(obj: griffe.Object | griffe.Alias, members: list[str] | None = None) -> list[str]:
    """The paths of the public classes, functions, methods and properties without a docstring that
    documenting ``obj`` shows: ``obj`` itself, a module's exports (its ``__all__``, else its public
    members defined there), and a class's own public members, recursively. ``members`` restricts the
    first level to those names, as mkdocstrings' ``members`` option does."""
    missing: list[str] = []
    seen: set[str] = set()

    def visit(node: griffe.Object | griffe.Alias, names: list[str] | None) -> None:
        try:
            target = node.final_target if node.is_alias else node
        except griffe.AliasResolutionError:
            return  # mkdocstrings fails on an alias it cannot resolve by itself
        if target.path in seen:
            return
        seen.add(target.path)
        if _checked(target) and not (target.docstring and target.docstring.value.strip()):
            missing.append(target.path)
        if not (target.is_module or target.is_class):
            return
        if names is None:
            if target.is_module and target.exports is not None:
                names = [n if isinstance(n, str) else n.name for n in target.exports]
            else:
                # a module's imported names are aliases, and a class's inherited members are not in
                # `members`: both are documented where they are defined
                names = [n for n, m in target.members.items() if not m.is_alias]
        for name in names:
            if _public(name) and name in target.members:
                member = target.members[name]
                try:
                    resolved = member.final_target if member.is_alias else member
                except griffe.AliasResolutionError:
                    continue
                if _checked(resolved) or resolved.is_module:
                    visit(resolved, None)

    visit(obj, members)
    return missing


@cache
def _loader(search_paths: tuple[str, ...]) -> griffe.GriffeLoader:
    return griffe.GriffeLoader(search_paths=list(search_paths))


def load(identifier: str, search_paths: tuple[str, ...]) -> griffe.Object | griffe.Alias:
    """The griffe object of ``identifier`` (``package.module.Name``), loaded from ``search_paths``."""
    loader = _loader(search_paths)
    parts = identifier.split(".")
    # the longest importable module path, then attributes down from it
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = loader.load(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = obj[name]
        return obj
    raise ImportError(f"{identifier}: not found under {list(search_paths)}")


def _search_paths(config: Any) -> tuple[str, ...]:
    """mkdocstrings' python ``paths`` (relative to mkdocs.yml), so both load the same code."""
    base = Path(config.config_file_path).resolve().parent
    plugin = config.plugins.get("mkdocstrings")
    handlers = plugin.config.get("handlers", {}) if plugin is not None else {}
    paths = handlers.get("python", {}).get("paths", ["."])
    return tuple(str((base / p).resolve()) for p in paths)


def on_files(files: Any, config: Any) -> Any:
    """Add the repository files of ``EXTERNAL`` to the site at their repository paths."""
    from mkdocs.structure.files import File

    for pattern in EXTERNAL:
        for path in sorted(ROOT.glob(pattern)):
            uri = path.relative_to(ROOT).as_posix()
            if files.get_file_from_path(uri) is None:
                files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Warn about each documented public object without a docstring (``--strict`` then fails)."""
    paths = _search_paths(config)
    for identifier, members in documented_identifiers(markdown):
        try:
            obj = load(identifier, paths)
        except (ImportError, KeyError) as err:
            log.warning("%s: cannot load %s to check its docstrings (%s)", page.file.src_uri, identifier, err)
            continue
        for path in missing_docstrings(obj, members):
            log.warning(
                "%s: %s has no docstring; add one (a line saying what it is for) where it is defined",
                page.file.src_uri,
                path,
            )
    return markdown
