"""The documentation: docs/hooks.py reports public objects without a docstring (so that
``mkdocs build --strict`` fails on them), the API pages' objects have docstrings, and the README stays
a newcomer's page whose links resolve. No mkdocs build here (``make docs`` is about 20 s)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

griffe = pytest.importorskip("griffe", reason="the docs extra: pip install -e '.[docs]'")
pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
SEARCH_PATHS = tuple(str(ROOT / p) for p in (".", "integrations/langchain", "integrations/llama_index"))


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = _hooks()

UNDOCUMENTED = '''
"""A module."""

__all__ = ["Documented", "Bare", "bare_function", "documented_function"]


class Documented:
    """Has a docstring, but two of its public members do not."""

    def method(self):
        """Documented."""

    def bare_method(self):
        pass

    @property
    def bare_property(self):
        return 1

    def _private(self):
        pass

    value: int = 3


class Bare:
    def method(self):
        """Documented, in an undocumented class."""


def bare_function():
    pass


def documented_function():
    """Documented."""


def not_exported():
    pass
'''


def test_hook_reports_every_public_object_without_a_docstring():
    with griffe.temporary_visited_module(UNDOCUMENTED, module_name="tiny") as module:
        missing = hooks.missing_docstrings(module)
    assert sorted(missing) == [
        "tiny.Bare",
        "tiny.Documented.bare_method",
        "tiny.Documented.bare_property",
        "tiny.bare_function",
    ]


def test_hook_follows_the_members_option_and_a_single_object():
    with griffe.temporary_visited_module(UNDOCUMENTED, module_name="tiny") as module:
        assert hooks.missing_docstrings(module, ["documented_function", "Bare"]) == ["tiny.Bare"]
        assert hooks.missing_docstrings(module["bare_function"]) == ["tiny.bare_function"]
        assert hooks.missing_docstrings(module["documented_function"]) == []


def test_hook_warns_through_mkdocs_logger(caplog, monkeypatch):
    """The warning goes to a ``mkdocs.*`` logger, which is what ``--strict`` counts."""

    class _File:
        src_uri = "api/tiny.md"

    class _Page:
        file = _File()

    with griffe.temporary_pypackage("tinypkg", {"__init__.py": UNDOCUMENTED}) as package:
        monkeypatch.setattr(hooks, "_search_paths", lambda config: (str(package.tmpdir),))
        with caplog.at_level("WARNING", logger="mkdocs"):
            hooks.on_page_markdown("# Tiny\n\n::: tinypkg.Documented\n", _Page(), None, None)
    records = [r for r in caplog.records if r.name.startswith("mkdocs.") and r.levelname == "WARNING"]
    assert [r.getMessage().split(" has no")[0] for r in records] == [
        "api/tiny.md: tinypkg.Documented.bare_method",
        "api/tiny.md: tinypkg.Documented.bare_property",
    ]


def test_pydantic_field_descriptions_become_docstrings():
    code = (
        "from pydantic import BaseModel, Field\n"
        "class M(BaseModel):\n"
        '    """A model."""\n'
        '    top_k: int = Field(default=1, description="Token budget" " across documents.")\n'
        "    plain: int = 3\n"
        '    kept: int = Field(default=2, description="ignored")\n'
        '    """Its own docstring wins."""\n'
    )
    extensions = griffe.load_extensions(hooks.FieldDescriptions())
    with griffe.temporary_visited_module(code, module_name="fields", extensions=extensions) as module:
        model = module["M"]
        assert model["top_k"].docstring.value == "Token budget across documents."
        assert model["plain"].docstring is None
        assert model["kept"].docstring.value == "Its own docstring wins."


def test_directives_and_their_members_option_are_read():
    page = "# API\n\n::: pkg.A\n\ntext\n\n::: pkg.mod\n    options:\n      members:\n        - B\n        - f\n"
    assert hooks.documented_identifiers(page) == [("pkg.A", None), ("pkg.mod", ["B", "f"])]


def test_every_object_on_the_api_pages_has_docstrings():
    """What ``make docs`` checks, without building the site: the public API is documented."""
    pages = sorted((ROOT / "docs" / "api").glob("*.md"))
    checked = 0
    for page in pages:
        for identifier, members in hooks.documented_identifiers(page.read_text(encoding="utf-8")):
            obj = hooks.load(identifier, SEARCH_PATHS)
            assert hooks.missing_docstrings(obj, members) == [], f"{page.name}: {identifier}"
            checked += 1
    assert checked >= 13


def test_readme_is_short_and_its_links_resolve():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250, "README.md: at most 250 lines; move details into docs/"
    for command in ("make demo", "make test"):
        assert command in readme
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert local, "README.md links into docs/"
    for target in local:
        assert (ROOT / target.lstrip("/")).exists(), f"README.md links to {target}, which does not exist"
