"""Benchmark: the size of the Lambda asset every stepkit Lambda ships (unzipped and zipped).

Builds the real asset (locked arm64 wheels plus sources, see infra/bundling.py) and prints
its size on disk, the size of the zip CDK uploads (deflate level 9, as cdk-assets does), and
the largest top-level entries. With ``--ref`` it builds the asset of a git revision instead,
using that revision's own bundling code, to compare before and after a change.
Prints figures; it is not a test. Run: .venv/bin/python bench/asset_size.py [--ref REV]
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_BUILD = "from infra.bundling import build_asset; print(build_asset(root=__import__('pathlib')" \
    ".Path('.').resolve()).path)"


def build(ref: str | None, workdir: Path) -> Path:
    """Build the asset of the working tree, or of ``ref`` with that revision's bundling."""
    tree = ROOT
    if ref is not None:
        tree = workdir / "tree"
        tree.mkdir()
        archive = subprocess.run(["git", "archive", ref], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tree, filter="data")
    out = subprocess.run([sys.executable, "-c", _BUILD], cwd=tree, check=True,
                         capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(tree),
                              "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}).stdout
    return Path(out.strip().splitlines()[-1])


def sizes(asset: Path) -> tuple[int, int, dict[str, int]]:
    """Unzipped bytes, zipped bytes and bytes per top-level entry."""
    unzipped = 0
    per_entry: dict[str, int] = {}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for path in sorted(p for p in asset.rglob("*") if p.is_file()):
            rel = path.relative_to(asset)
            size = path.stat().st_size
            unzipped += size
            top = rel.parts[0]
            per_entry[top] = per_entry.get(top, 0) + size
            archive.write(path, rel.as_posix())
    return unzipped, len(buffer.getvalue()), per_entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", help="a git revision to build instead of the working tree")
    parser.add_argument("--top", type=int, default=12, help="largest entries to list")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        asset = build(args.ref, Path(workdir))
        unzipped, zipped, per_entry = sizes(asset)
        files = sum(1 for p in asset.rglob("*") if p.is_file())
    mb = 1000 * 1000  # decimal megabytes, as the Lambda quotas (250 MB unzipped) count
    print(f"asset of {args.ref or 'the working tree'}: {files} files, "
          f"{unzipped / mb:.1f} MB unzipped, {zipped / mb:.1f} MB zipped")
    for name, size in sorted(per_entry.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"  {size / mb:7.2f} MB  {name}")


if __name__ == "__main__":
    main()
