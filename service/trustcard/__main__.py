"""`python -m trustcard` runs the CLI."""

from trustcard.cli import main

main()
