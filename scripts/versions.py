"""The release version of every package in this repository, and the one command that changes it.

Every package (the core at the root and each ``integrations/*/pyproject.toml``) is released together
under one version. Each package's build reads its version from its own import package
(``__version__``, through setuptools' dynamic ``attr``), so an unpacked sdist builds on its own;
``bump`` writes the new version into all of them, the integrations' requirement on gemfilter-rag and
the core's extras that name the integrations, and ``tests/test_packaging.py`` fails when they differ.

    python scripts/versions.py            # print each package's version
    python scripts/versions.py bump 0.2.0 # write 0.2.0 everywhere (make bump VERSION=0.2.0)
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest brings tomli
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
CORE = "gemfilter-rag"
VERSION_LINE = re.compile(r'^__version__\s*=\s*["\']([^"\']+)["\']', re.M)
RELEASE = re.compile(r"^\d+\.\d+\.\d+$")


@dataclass(frozen=True)
class Package:
    """One distribution built from this repository."""

    name: str
    """The distribution name, e.g. ``langchain-gemfilter``."""
    directory: Path
    """The folder holding its pyproject.toml."""
    version_file: Path
    """The file its version is read from when it is built."""
    version: str
    requirements: tuple[str, ...]
    """Its dependencies and optional dependencies, as written."""

    @property
    def is_core(self) -> bool:
        return self.name == CORE


def pyproject_paths(root: Path = ROOT) -> list[Path]:
    """The root pyproject.toml, then every integration's, in name order."""
    return [root / "pyproject.toml", *sorted((root / "integrations").glob("*/pyproject.toml"))]


def _module_file(directory: Path, module: str) -> Path:
    base = directory.joinpath(*module.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{directory}: no module {module} (looked for {base}/__init__.py and {base}.py)")


def _version_file(directory: Path, data: dict) -> Path:
    """Where the build of the package in ``directory`` takes its version from."""
    project = data.get("project", {})
    if "version" in project:
        return directory / "pyproject.toml"
    tool = data.get("tool", {})
    dynamic = tool.get("setuptools", {}).get("dynamic", {}).get("version")
    if isinstance(dynamic, dict) and "attr" in dynamic:
        module, _, attribute = dynamic["attr"].rpartition(".")
        if attribute != "__version__":
            raise ValueError(f"{directory}/pyproject.toml: dynamic version attr should name __version__")
        return _module_file(directory, module)
    if isinstance(dynamic, dict) and "file" in dynamic:
        files = dynamic["file"]
        return directory / (files if isinstance(files, str) else files[0])
    hatch = tool.get("hatch", {}).get("version", {})
    if "path" in hatch:
        return directory / hatch["path"]
    raise ValueError(
        f"{directory}/pyproject.toml: no version found; set [project] version, a setuptools dynamic version "
        "(attr or file) or [tool.hatch.version] path"
    )


def _read_version(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    if path.name == "pyproject.toml":
        return tomllib.loads(text)["project"]["version"]
    if path.suffix == ".py":
        found = VERSION_LINE.search(text)
        if found is None:
            raise ValueError(f'{path}: no literal line __version__ = "X.Y.Z" (the build reads it without importing)')
        return found.group(1)
    return text.strip()


def packages(root: Path = ROOT) -> list[Package]:
    """Every package of the repository, the core first."""
    found = []
    for path in pyproject_paths(root):
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        project = data["project"]
        version_file = _version_file(path.parent, data)
        requirements = [*project.get("dependencies", [])]
        for extra in project.get("optional-dependencies", {}).values():
            requirements.extend(extra)
        found.append(
            Package(project["name"], path.parent, version_file, _read_version(version_file), tuple(requirements))
        )
    return found


def compatible_range(version: str) -> str:
    """The requirement specifier one package of a release puts on another: this release up to the next minor."""
    major, minor, _ = (int(part) for part in version.split("."))
    return f">={version},<{major}.{minor + 1}"


def requirement_name(requirement: str) -> str:
    """The normalised distribution name of a requirement string."""
    name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return re.sub(r"[-_.]+", "-", name.group(1)).lower() if name else ""


def sibling_requirements(package: Package, names: set[str]) -> list[str]:
    """The requirements of ``package`` on other packages of this repository (a self-reference excluded)."""
    return [r for r in package.requirements if requirement_name(r) in names - {package.name}]


def _rewrite_requirements(text: str, names: set[str], version: str) -> str:
    spec = compatible_range(version)

    def pin(match: re.Match[str]) -> str:
        name, extras = match.group(1), match.group(2) or ""
        if requirement_name(name) not in names:
            return match.group(0)
        return f'"{name}{extras}{spec}"'

    quoted = re.compile(r'"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?(?:\s*[<>=!~][^";]*)?"')
    # Only the [project] table and its optional dependencies hold requirements.
    parts = re.split(r"(?m)^(?=\[)", text)
    return "".join(
        quoted.sub(pin, part) if re.match(r"\[project(\.optional-dependencies)?\]", part) else part for part in parts
    )


def _move_unreleased(changelog: Path, version: str) -> None:
    text = changelog.read_text(encoding="utf-8")
    if re.search(rf"^## \[{re.escape(version)}\]", text, re.M):
        return
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    if "## [Unreleased]" not in text:
        raise ValueError(f"{changelog}: no '## [Unreleased]' section to release as {version}")
    text = text.replace("## [Unreleased]", f"## [Unreleased]\n\n## [{version}] - {today}", 1)
    changelog.write_text(text, encoding="utf-8")


def bump(version: str, root: Path = ROOT) -> list[Path]:
    """Write ``version`` into every package and every requirement between them; return the files changed."""
    if not RELEASE.match(version):
        raise ValueError(f"version: {version!r} is not X.Y.Z (e.g. 0.2.0)")
    pkgs = packages(root)
    names = {p.name for p in pkgs}
    changed = []
    for package in pkgs:
        for path in {package.version_file, package.directory / "pyproject.toml"}:
            old = path.read_text(encoding="utf-8")
            new = old
            if path == package.version_file and path.suffix == ".py":
                new = VERSION_LINE.sub(f'__version__ = "{version}"', new, count=1)
            elif path == package.version_file and path.name != "pyproject.toml":
                new = version + "\n"
            if path.name == "pyproject.toml":
                if path == package.version_file:
                    new = re.sub(r'(?m)^version\s*=\s*"[^"]*"', f'version = "{version}"', new, count=1)
                new = _rewrite_requirements(new, names - {package.name}, version)
            if new != old:
                path.write_text(new, encoding="utf-8")
                changed.append(path)
    changelog = root / "CHANGELOG.md"
    if changelog.is_file():
        _move_unreleased(changelog, version)
        changed.append(changelog)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    bump_parser = sub.add_parser("bump", help="write one version into every package")
    bump_parser.add_argument("version")
    args = parser.parse_args(argv)
    if args.command == "bump":
        for path in bump(args.version):
            print(f"wrote {path.relative_to(ROOT)}")
        return 0
    for package in packages():
        print(f"{package.name} {package.version}  ({package.version_file.relative_to(ROOT)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
