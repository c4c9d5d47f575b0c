"""Docker-free Lambda packaging: one asset directory with the sources and the locked dependencies.

Every stepkit Lambda (each worker and the router) runs the same code: the modules of
``runtime/`` that the handlers import (:func:`source_files`), the app's ``functions/`` and
the runtime dependencies pinned in ``uv.lock``. The directory is built locally, without
Docker:

1. ``uv export --frozen --no-dev`` writes the locked runtime requirements: the project's
   core dependencies, without the dev group or the ``cli`` extra (the ``stepkit`` command
   and dev server, which no Lambda runs), and without the project itself;
2. ``uv pip install --target`` installs exactly those pins as wheels for CPython
   :data:`PYTHON_VERSION` on :data:`PLATFORM` (the glibc of Lambda's Amazon Linux 2023 on
   arm64), never building from source, so what runs on Lambda is what was resolved here;
3. the sources are copied next to them.

The result is cached under ``.stepkit/lambda-assets/`` in a directory named after a hash of
every input (the lock, ``pyproject.toml``, the sources and these build settings). That hash is
also the CDK asset hash, so a repeated synth neither rebuilds nor re-fingerprints 40 MB, and the
same inputs always give the same asset hash (and the same S3 object on deploy).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_

from infra import import_graph
from runtime.discovery import DEFAULT_PACKAGE

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PYTHON_VERSION = "3.14"  # keep in step with LAMBDA_RUNTIME
LAMBDA_RUNTIME = lambda_.Runtime.PYTHON_3_14
LAMBDA_ARCHITECTURE = lambda_.Architecture.ARM_64
PLATFORM = "aarch64-manylinux_2_34"  # Amazon Linux 2023 (glibc 2.34) on Graviton
SOURCES = ("runtime", DEFAULT_PACKAGE)
HANDLERS = "runtime/handlers"  # every module here is the handler of some Lambda
CACHE_DIR = Path(".stepkit") / "lambda-assets"
PRUNE_AFTER_S = 3600
_FORMAT = "2"  # bump when the build steps change, so cached assets are rebuilt
_SKIP_DIRS = {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"}


class BundlingError(RuntimeError):
    """The Lambda asset could not be built (uv missing, a wheel unavailable, ...)."""


@dataclass(frozen=True)
class LambdaAsset:
    """A built asset directory and the hash of everything it was built from."""

    path: Path
    hash: str


def _package_files(root: Path, package: str) -> list[Path]:
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root / package):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in filenames:
            if not name.endswith((".pyc", ".pyo")):
                files.append((Path(dirpath) / name).relative_to(root))
    return files


def _module_name(rel: Path) -> str:
    parts = rel.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def lambda_entries(root: Path) -> list[str]:
    """The modules a Lambda starts from: every module of :data:`HANDLERS` (each one a
    handler) and every module of the app package, which the runtime discovers and imports."""
    files = [*_package_files(root, HANDLERS), *_package_files(root, DEFAULT_PACKAGE)]
    return sorted(_module_name(f) for f in files if f.suffix == ".py")


def source_files(root: Path) -> list[Path]:
    """The sources a Lambda needs under ``root`` (relative, sorted), without caches.

    The app package ships whole (its modules and any data files beside them); of
    ``runtime/``, only the modules the entries import (:func:`lambda_entries`, followed by
    :mod:`infra.import_graph`), so the CLI, dev server, local backend and test harness stay
    on the developer's machine.
    """
    files = _package_files(root, DEFAULT_PACKAGE)
    if not any(f.suffix == ".py" for f in files) or not (root / HANDLERS).is_dir():
        raise BundlingError(f"no sources under {root} ({', '.join(SOURCES)})")
    graph = import_graph.walk(root, lambda_entries(root), first_party=SOURCES)
    files += [path.relative_to(root) for name, path in graph.modules.items()
              if name.partition(".")[0] != DEFAULT_PACKAGE]
    return sorted(set(files))


@dataclass(frozen=True)
class Target:
    """The interpreter and platform the dependency wheels are installed for."""

    python_version: str = PYTHON_VERSION
    platform: str = PLATFORM


LAMBDA_TARGET = Target()


def fingerprint(root: Path, files: list[Path], *, dependencies: bool,
                target: Target = LAMBDA_TARGET) -> str:
    """Hash of every input of the build: settings, lock (when bundled) and sources."""
    digest = hashlib.sha256()
    settings = [_FORMAT, target.python_version, target.platform,
                "deps" if dependencies else "src"]
    digest.update("\0".join(settings).encode())
    inputs = [Path("uv.lock"), Path("pyproject.toml")] if dependencies else []
    for rel in [*inputs, *files]:
        digest.update(b"\0" + rel.as_posix().encode() + b"\0")
        digest.update(hashlib.sha256((root / rel).read_bytes()).digest())
    return digest.hexdigest()


def build_asset(
    *, root: Path = PROJECT_ROOT, dependencies: bool = True, cache_dir: Path | None = None,
    target: Target = LAMBDA_TARGET,
) -> LambdaAsset:
    """Build (or reuse from the cache) the Lambda asset directory.

    Args:
        root: The project root (holding ``uv.lock``, ``runtime/`` and ``functions/``).
        dependencies: Install the locked dependencies; ``False`` gives a small source-only
            asset for template tests (``-c stepkit:bundle=false``), which cannot run on Lambda.
        cache_dir: Where built assets are kept (default ``<root>/.stepkit/lambda-assets``).
        target: What the wheels are for: Lambda's by default; the tests build the same
            asset for this machine too, to import the handlers from it.

    Returns:
        The asset directory and its hash.

    Raises:
        BundlingError: uv is missing or a step of the build failed.
    """
    files = source_files(root)
    key = fingerprint(root, files, dependencies=dependencies, target=target)
    cache = cache_dir or root / CACHE_DIR
    kind = "full" if dependencies else "src"
    built = cache / f"{kind}-{key[:24]}"
    if built.is_dir():
        os.utime(built)  # recently used: not pruned by another build
        return LambdaAsset(built, key)
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=cache))
    try:
        if dependencies:
            _install_dependencies(root, staging, target)
        for rel in files:
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / rel, staging / rel)
        _normalise_modes(staging)
        try:
            staging.rename(built)  # atomic: a directory named after its key is complete
        except OSError:
            if not built.is_dir():  # not a concurrent build that finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _prune(cache, kind, keep=built)
    return LambdaAsset(built, key)


def lambda_code(*, bundle: bool = True, root: Path = PROJECT_ROOT) -> lambda_.Code:
    """The one ``Code`` shared by every stepkit Lambda of a stack.

    Args:
        bundle: Include the dependencies (deployable); ``False`` only for template tests.
        root: The project root.
    """
    return lambda_code_factory(bundle=bundle, root=root)()


def lambda_code_factory(*, bundle: bool = True,
                        root: Path = PROJECT_ROOT) -> Callable[[], lambda_.Code]:
    """Makes the ``Code`` of one stack (a CDK asset belongs to one stack) from one build.

    Every stack's ``Code`` has the same hash, so the asset is uploaded once.

    Args:
        bundle: Include the dependencies (deployable); ``False`` only for template tests.
        root: The project root.
    """
    asset = build_asset(root=root, dependencies=bundle)
    return lambda: lambda_.Code.from_asset(
        str(asset.path), asset_hash=asset.hash, asset_hash_type=cdk.AssetHashType.CUSTOM
    )


def _uv() -> list[str]:
    if exe := shutil.which("uv"):
        return [exe]
    if importlib.util.find_spec("uv") is not None:
        return [sys.executable, "-m", "uv"]
    raise BundlingError("uv is needed to package the Lambda code; run scripts/setup.sh")


def _run(cmd: list[str], root: Path) -> None:
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BundlingError(f"`{' '.join(cmd)}` failed ({done.returncode}):\n{done.stderr}")


def _install_dependencies(root: Path, into: Path, target: Target) -> None:
    uv = _uv()
    requirements = into / "requirements.txt"
    _run([*uv, "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project",
          "--no-header", "--quiet", "--output-file", str(requirements)], root)
    # --no-deps: the export already lists every locked package; nothing may be re-resolved.
    _run([*uv, "pip", "install", "--quiet", "--target", str(into), "--no-deps",
          "--python-platform", target.platform, "--python-version", target.python_version,
          "--only-binary", ":all:", "--requirement", str(requirements)], root)
    requirements.unlink()
    # Console scripts carry this machine's interpreter path in their shebang; Lambda
    # never runs them.
    shutil.rmtree(into / "bin", ignore_errors=True)


def _prune(cache: Path, kind: str, *, keep: Path) -> None:
    """Drop builds (40 MB each) and abandoned staging directories unused for an hour; a
    younger one may be in use by a concurrent synth of other sources."""
    for old in [*cache.glob(f"{kind}-*"), *cache.glob(f".{kind}-*")]:
        try:
            stale = time.time() - old.stat().st_mtime > PRUNE_AFTER_S
        except FileNotFoundError:  # pruned by a concurrent build
            continue
        if old != keep and stale:
            shutil.rmtree(old, ignore_errors=True)


def _normalise_modes(path: Path) -> None:
    """Make everything world-readable: Lambda reads the code as a different user than the
    one that built it, and a restrictive umask here would break imports there."""
    for dirpath, _, filenames in os.walk(path):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            file = Path(dirpath) / name
            file.chmod(0o755 if file.stat().st_mode & 0o111 else 0o644)
