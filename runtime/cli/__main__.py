"""``python -m runtime.cli``: the ``stepkit`` command (how ``stepkit dev --reload`` restarts)."""

from runtime.cli import main

main()
