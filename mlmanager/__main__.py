"""`python -m mlmanager ...`: the `mlmanager` command."""

from mlmanager.cli import main

main()
