"""Docker-free Lambda packaging: one asset directory with the sources and the locked dependencies.

Every stepkit Lambda (each worker and the router) runs the same code: ``runtime/``, the app's
``functions/`` and the runtime dependencies pinned in ``uv.lock``. The directory is built
locally, without Docker:

1. ``uv export --frozen --no-dev`` writes the locked runtime requirements (no dev tools, no
   project itself);
2. ``uv pip install --target`` installs exactly those pins as wheels for CPython
   :data:`PYTHON_VERSION` on :data:`PLATFORM` (the glibc of Lambda's Amazon Linux 2023 on
   arm64), never building from source, so what runs on Lambda is what was resolved here;
3. the sources are copied next to them.

The result is cached under ``.stepkit/lambda-assets/`` in a directory named after a hash of
every input (the lock, ``pyproject.toml``, the sources and these build settings). That hash is
also the CDK asset hash, so a repeated synth neither rebuilds nor re-fingerprints 60 MB, and the
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
from dataclasses import dataclass
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_

from runtime.discovery import DEFAULT_PACKAGE

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PYTHON_VERSION = "3.13"  # keep in step with LAMBDA_RUNTIME
LAMBDA_RUNTIME = lambda_.Runtime.PYTHON_3_13
LAMBDA_ARCHITECTURE = lambda_.Architecture.ARM_64
PLATFORM = "aarch64-manylinux_2_34"  # Amazon Linux 2023 (glibc 2.34) on Graviton
SOURCES = ("runtime", DEFAULT_PACKAGE)
CACHE_DIR = Path(".stepkit") / "lambda-assets"
PRUNE_AFTER_S = 3600
_FORMAT = "1"  # bump when the build steps change, so cached assets are rebuilt
_SKIP_DIRS = {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"}


class BundlingError(RuntimeError):
    """The Lambda asset could not be built (uv missing, a wheel unavailable, ...)."""


@dataclass(frozen=True)
class LambdaAsset:
    """A built asset directory and the hash of everything it was built from."""

    path: Path
    hash: str


def source_files(root: Path) -> list[Path]:
    """Files of :data:`SOURCES` under ``root`` (relative, sorted), without caches."""
    files: list[Path] = []
    for package in SOURCES:
        for dirpath, dirnames, filenames in os.walk(root / package):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
            for name in filenames:
                if not name.endswith((".pyc", ".pyo")):
                    files.append((Path(dirpath) / name).relative_to(root))
    if not files:
        raise BundlingError(f"no sources under {root} ({', '.join(SOURCES)})")
    return sorted(files)


def fingerprint(root: Path, files: list[Path], *, dependencies: bool) -> str:
    """Hash of every input of the build: settings, lock (when bundled) and sources."""
    digest = hashlib.sha256()
    settings = [_FORMAT, PYTHON_VERSION, PLATFORM, "deps" if dependencies else "src"]
    digest.update("\0".join(settings).encode())
    inputs = [Path("uv.lock"), Path("pyproject.toml")] if dependencies else []
    for rel in [*inputs, *files]:
        digest.update(b"\0" + rel.as_posix().encode() + b"\0")
        digest.update(hashlib.sha256((root / rel).read_bytes()).digest())
    return digest.hexdigest()


def build_asset(
    *, root: Path = PROJECT_ROOT, dependencies: bool = True, cache_dir: Path | None = None
) -> LambdaAsset:
    """Build (or reuse from the cache) the Lambda asset directory.

    Args:
        root: The project root (holding ``uv.lock``, ``runtime/`` and ``functions/``).
        dependencies: Install the locked dependencies; ``False`` gives a small source-only
            asset for template tests (``-c stepkit:bundle=false``), which cannot run on Lambda.
        cache_dir: Where built assets are kept (default ``<root>/.stepkit/lambda-assets``).

    Returns:
        The asset directory and its hash.

    Raises:
        BundlingError: uv is missing or a step of the build failed.
    """
    files = source_files(root)
    key = fingerprint(root, files, dependencies=dependencies)
    cache = cache_dir or root / CACHE_DIR
    kind = "full" if dependencies else "src"
    target = cache / f"{kind}-{key[:24]}"
    if target.is_dir():
        os.utime(target)  # recently used: not pruned by another build
        return LambdaAsset(target, key)
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=cache))
    try:
        if dependencies:
            _install_dependencies(root, staging)
        for rel in files:
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / rel, staging / rel)
        _normalise_modes(staging)
        try:
            staging.rename(target)  # atomic: a directory named after its key is complete
        except OSError:
            if not target.is_dir():  # not a concurrent build that finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _prune(cache, kind, keep=target)
    return LambdaAsset(target, key)


def lambda_code(*, bundle: bool = True, root: Path = PROJECT_ROOT) -> lambda_.Code:
    """The one ``Code`` shared by every stepkit Lambda of a stack.

    Args:
        bundle: Include the dependencies (deployable); ``False`` only for template tests.
        root: The project root.
    """
    asset = build_asset(root=root, dependencies=bundle)
    return lambda_.Code.from_asset(
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


def _install_dependencies(root: Path, target: Path) -> None:
    uv = _uv()
    requirements = target / "requirements.txt"
    _run([*uv, "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project",
          "--no-header", "--quiet", "--output-file", str(requirements)], root)
    # --no-deps: the export already lists every locked package; nothing may be re-resolved.
    _run([*uv, "pip", "install", "--quiet", "--target", str(target), "--no-deps",
          "--python-platform", PLATFORM, "--python-version", PYTHON_VERSION,
          "--only-binary", ":all:", "--requirement", str(requirements)], root)
    requirements.unlink()
    # Console scripts carry this machine's interpreter path in their shebang; Lambda
    # never runs them.
    shutil.rmtree(target / "bin", ignore_errors=True)


def _prune(cache: Path, kind: str, *, keep: Path) -> None:
    """Drop builds (60 MB each) and abandoned staging directories unused for an hour; a
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
