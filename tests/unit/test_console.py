"""The console script without the ``cli`` extra: one line saying what to install."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
sys.modules["click"] = None  # as if the cli extra were not installed
from runtime.console import main
main()
"""


def test_stepkit_without_the_cli_extra_says_what_to_install() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr.strip() == (
        "stepkit: the command line needs the 'cli' extra (click is not installed): "
        "uv sync --extra cli, or pip install 'stepkit[cli]'"
    )


def test_stepkit_with_it_runs_the_cli() -> None:
    out = subprocess.run([sys.executable, "-c", "from runtime.console import main; main()",
                          "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "Usage:" in out.stdout, out.stderr
