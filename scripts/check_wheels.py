"""Build, check, install and smoke-test every package as a user would get it (make check-wheels).

1. ``python -m build`` makes an sdist of the core (the root) and of each ``integrations/*/pyproject.toml``,
   and the wheel from that sdist (so an sdist that cannot build on its own fails here), into dist/.
2. ``twine check --strict`` on all of them; each wheel's contents and metadata are checked (below).
3. A fresh virtual environment in a temporary folder gets torch (``--torch-spec``, first, so that pip
   does not pick another build) and then the built wheels, nothing editable.
4. scripts/smoke_installed.py runs in that environment from a temporary folder outside the checkout.

The default model is fetched into ``$GEMFILTER_CACHE`` (else ``~/.cache/gemfilter_rag``), so a cache
that the test suite filled is reused. Exits non-zero on the first failure.
"""

from __future__ import annotations

import argparse
import email.parser
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from versions import ROOT, Package, compatible_range, packages, sibling_requirements  # noqa: E402

FORBIDDEN_PARTS = {"tests", "test", "benchmarks", "examples", "scripts", "__pycache__"}


def run(cmd: list[str], **kwargs: object) -> None:
    print("+ " + " ".join(str(c) for c in cmd), flush=True)
    subprocess.run(cmd, check=True, **kwargs)  # type: ignore[call-overload]


def fail(message: str) -> None:
    raise SystemExit(f"check-wheels: FAILED: {message}")


def tree_files(directory: Path) -> set[str]:
    """Files git counts as part of ``directory`` (tracked, or new and not ignored), relative to it."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", "."],
        cwd=directory,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {line for line in out.splitlines() if line and (directory / line).is_file()}


def built(dist: Path, package: Package, suffix: str) -> Path:
    stem = re.sub(r"[-_.]+", "_", package.name).lower()
    found = sorted(dist.glob(f"{stem}-{package.version}{suffix}"))
    if len(found) != 1:
        fail(f"expected one {stem}-{package.version}{suffix} in {dist}, found {[f.name for f in found]}")
    return found[0]


def check_wheel(wheel: Path, package: Package, all_packages: list[Package]) -> None:
    """The wheel holds exactly the package's source files (data files included), no tests or
    benchmarks, and metadata with this release's version and requirements."""
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(zf.read(meta_name).decode("utf-8"))
    content = [n for n in names if not n.split("/", 1)[0].endswith(".dist-info")]
    if not content:
        fail(f"{wheel.name}: holds no package files")
    bad = [n for n in content if FORBIDDEN_PARTS & set(n.split("/")[:-1]) or n.endswith((".pyc", ".pyo"))]
    if bad:
        fail(f"{wheel.name}: holds test, benchmark or cache files: {bad[:10]}")
    source = tree_files(package.directory)
    tops = {n.split("/", 1)[0] for n in content}
    expected = {f for f in source if f.split("/", 1)[0] in tops and f.split("/", 1)[0] not in FORBIDDEN_PARTS}
    missing, extra = sorted(expected - set(content)), sorted(set(content) - expected)
    if missing:
        where = package.directory.relative_to(ROOT) or "."
        fail(f"{wheel.name}: misses files of {where}: {missing[:10]} (package data?)")
    if extra:
        fail(f"{wheel.name}: holds files that are not in the source tree: {extra[:10]}")
    if package.is_core:
        if "gemfilter_rag/py.typed" not in content:
            fail(f"{wheel.name}: no gemfilter_rag/py.typed marker")
        profiles = sorted(n for n in content if n.startswith("gemfilter_rag/profiles/") and n.endswith(".json"))
        if "gemfilter_rag/profiles/smollm2-135m-instruct.json" not in profiles:
            fail(f"{wheel.name}: the default model's profile JSON is missing (found {profiles})")
        print(f"  {wheel.name}: {len(content)} files, profiles {[Path(p).name for p in profiles]}, py.typed")
    else:
        typed = ", py.typed" if any(n.endswith("/py.typed") for n in content) else ""
        print(f"  {wheel.name}: {len(content)} files{typed}")
    if metadata["Version"] != package.version:
        fail(f"{wheel.name}: metadata version {metadata['Version']}, expected {package.version}")
    if not metadata.get("License-Expression") and not metadata.get("License"):
        fail(f"{wheel.name}: no license in its metadata")
    if not any(Path(n).name.startswith("LICENSE") for n in names):
        fail(f"{wheel.name}: no LICENSE file")
    names_here = {p.name for p in all_packages}
    spec = compatible_range(package.version)
    for requirement in sibling_requirements(package, names_here):
        if not requirement.replace(" ", "").endswith(spec):
            fail(f"{package.name}: requirement {requirement!r} should end with {spec} (make bump VERSION=...)")


def check_sdist(sdist: Path, package: Package) -> None:
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    for needed in ("pyproject.toml", "README.md", "LICENSE", "PKG-INFO"):
        if needed not in names:
            fail(f"{sdist.name}: no {needed}")
    print(f"  {sdist.name}: {len(names)} entries")


def build_all(dist: Path, pkgs: list[Package]) -> None:
    if dist.exists():
        shutil.rmtree(dist)
    for package in pkgs:
        # Build the sdist, then the wheel from it: an sdist that cannot build alone fails here.
        run([sys.executable, "-m", "build", "--outdir", str(dist), str(package.directory)])


def fresh_env(where: Path, torch_spec: str, wheels: list[Path], dist: Path) -> Path:
    run([sys.executable, "-m", "venv", str(where)])
    python = where / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    run([*pip, torch_spec])
    # The wheels by file name (so gemfilter-rag is this build, never an index's), dist/ for what they require.
    find_links = " ".join(filter(None, [os.environ.get("PIP_FIND_LINKS"), str(dist)]))
    run([*pip, *map(str, wheels)], env={**os.environ, "PIP_FIND_LINKS": find_links})
    run([str(python), "-m", "pip", "check"])
    return python


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", help="where the sdists and wheels go")
    parser.add_argument("--torch-spec", default=os.environ.get("TORCH_SPEC", "torch==2.13.0"))
    parser.add_argument("--keep", action="store_true", help="keep the temporary environment and print its path")
    args = parser.parse_args()
    started = time.perf_counter()
    pkgs = packages()
    version = pkgs[0].version
    if any(p.version != version for p in pkgs):
        fail("versions differ: " + ", ".join(f"{p.name} {p.version}" for p in pkgs) + " (make bump VERSION=...)")
    print(f"check-wheels: {len(pkgs)} packages at {version}: {', '.join(p.name for p in pkgs)}")

    build_all(args.dist, pkgs)
    stamp = time.perf_counter()
    files = sorted(args.dist.iterdir())
    run([sys.executable, "-m", "twine", "check", "--strict", *map(str, files)])
    wheels = []
    for package in pkgs:
        wheel, sdist = built(args.dist, package, "-py3-none-any.whl"), built(args.dist, package, ".tar.gz")
        check_wheel(wheel, package, pkgs)
        check_sdist(sdist, package)
        wheels.append(wheel)
    print(f"check-wheels: built and checked in {stamp - started:.0f}s (+{time.perf_counter() - stamp:.0f}s checks)")

    temp = Path(tempfile.mkdtemp(prefix="gemfilter-wheels-"))
    try:
        stamp = time.perf_counter()
        python = fresh_env(temp / "venv", args.torch_spec, wheels, args.dist.resolve())
        print(f"check-wheels: fresh environment installed in {time.perf_counter() - stamp:.0f}s")
        outside = temp / "elsewhere"
        outside.mkdir()
        smoke = outside / "smoke_installed.py"
        shutil.copy(ROOT / "scripts" / "smoke_installed.py", smoke)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env["HF_HUB_OFFLINE"] = "1"
        integrations = [f"{p.directory.name}={p.name}" for p in pkgs if not p.is_core]
        stamp = time.perf_counter()
        run(
            [str(python), str(smoke), "--version", version, "--checkout", str(ROOT)]
            + [arg for name in integrations for arg in ("--integration", name)],
            cwd=outside,
            env=env,
        )
        print(f"check-wheels: smoke test in {time.perf_counter() - stamp:.0f}s")
    finally:
        if args.keep:
            print(f"check-wheels: kept {temp}")
        else:
            shutil.rmtree(temp, ignore_errors=True)
    print(f"check-wheels: passed in {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
