"""One version per release: every package of the repository (the core and each integrations/*/pyproject.toml)
has the same version, requires its siblings in this release's range, and carries the metadata its index
page needs. ``make bump VERSION=X.Y.Z`` writes what these tests compare; ``make check-wheels`` builds it."""

from __future__ import annotations

import ast
import importlib.util
import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_versions():
    spec = importlib.util.spec_from_file_location("gemfilter_scripts_versions", ROOT / "scripts" / "versions.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up by name
    spec.loader.exec_module(module)
    return module


versions = _load_versions()
PACKAGES = versions.packages(ROOT)
NAMES = {p.name for p in PACKAGES}


def _ids(packages):
    return [p.name for p in packages]


def test_every_integration_is_found():
    found = {p.directory for p in PACKAGES}
    assert found == {ROOT, *(p.parent for p in (ROOT / "integrations").glob("*/pyproject.toml"))}
    assert PACKAGES[0].is_core


@pytest.mark.parametrize("package", PACKAGES, ids=_ids(PACKAGES))
def test_one_version_for_every_package(package):
    core = PACKAGES[0].version
    assert re.fullmatch(r"\d+\.\d+\.\d+", core), f"gemfilter_rag.__version__ = {core!r} is not X.Y.Z"
    assert package.version == core, (
        f"{package.name} is at {package.version} ({package.version_file.relative_to(ROOT)}), the core at {core}; "
        "run make bump VERSION=..."
    )


@pytest.mark.parametrize("package", PACKAGES, ids=_ids(PACKAGES))
def test_the_import_package_reports_the_same_version(package):
    # Whatever the build reads, the installed module's __version__ says the same.
    skip = {"tests", "benchmarks", "examples", "scripts", "integrations", "build", "dist"}
    tops = [
        d
        for d in package.directory.iterdir()
        if d.is_dir() and d.name not in skip and not d.name.startswith(".") and not d.name.endswith(".egg-info")
    ]
    files = [f for top in tops for f in top.rglob("__init__.py")]
    stated = {f: versions.VERSION_LINE.search(f.read_text(encoding="utf-8")) for f in files}
    stated = {f: m.group(1) for f, m in stated.items() if m}
    if package.version_file.suffix == ".py":
        assert package.version_file in stated, f"{package.name}: no __version__ in {package.version_file}"
    assert set(stated.values()) <= {package.version}, stated


@pytest.mark.parametrize("package", PACKAGES, ids=_ids(PACKAGES))
def test_siblings_are_required_in_this_release_range(package):
    spec = versions.compatible_range(package.version)
    if not package.is_core:
        assert any(versions.requirement_name(r) == versions.CORE for r in package.requirements), package.requirements
    for requirement in versions.sibling_requirements(package, NAMES):
        assert requirement.replace(" ", "").endswith(spec), (
            f"{package.name}: {requirement!r} should require {spec}; run make bump VERSION={package.version}"
        )


@pytest.mark.parametrize("package", PACKAGES, ids=_ids(PACKAGES))
def test_index_metadata(package):
    project = versions.tomllib.loads((package.directory / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for field in ("description", "readme", "license", "requires-python", "classifiers"):
        assert project.get(field), f"{package.name}: [project] {field} is missing"
    assert (package.directory / project["readme"]).is_file()
    assert (package.directory / "LICENSE").is_file(), f"{package.name}: no LICENSE beside its pyproject.toml"
    trove = pytest.importorskip("trove_classifiers")
    unknown = [c for c in project["classifiers"] if c not in trove.classifiers]
    assert not unknown, f"{package.name}: unknown classifiers {unknown}"
    assert not [c for c in project["classifiers"] if c.startswith("License ::")], "the license expression says it"


def test_llamahub_table():
    pyproject = ROOT / "integrations" / "llama_index" / "pyproject.toml"
    data = versions.tomllib.loads(pyproject.read_text(encoding="utf-8"))
    hub = data["tool"]["llamahub"]
    assert hub["import_path"] == "llama_index.postprocessor.gemfilter"
    assert isinstance(hub["contains_example"], bool)
    init = ROOT / "integrations" / "llama_index" / "llama_index" / "postprocessor" / "gemfilter" / "__init__.py"
    tree = ast.parse(init.read_text(encoding="utf-8"))
    exported = next(
        ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "__all__"
    )
    assert set(hub["class_authors"]) == set(exported) - {"__version__"}


def test_changelog_has_this_release():
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## [Unreleased]" in text
    assert re.search(rf"^## \[{re.escape(PACKAGES[0].version)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", text, re.M)


def test_bump_writes_every_version_and_range(tmp_path):
    copy = tmp_path / "repo"
    for package in PACKAGES:
        rel = package.directory.relative_to(ROOT)
        for path in {package.version_file, package.directory / "pyproject.toml"}:
            target = copy / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
        (copy / rel).mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "CHANGELOG.md", copy / "CHANGELOG.md")
    versions.bump("3.4.5", copy)
    bumped = versions.packages(copy)
    assert {p.version for p in bumped} == {"3.4.5"}
    names = {p.name for p in bumped}
    for package in bumped:
        for requirement in versions.sibling_requirements(package, names):
            assert requirement.endswith(">=3.4.5,<3.5"), requirement
    core = next(p for p in bumped if p.is_core)
    assert "gemfilter-rag[serve]" in core.requirements  # its own extra stays unpinned
    assert "## [3.4.5] - " in (copy / "CHANGELOG.md").read_text()
