"""`python -m chatledger` runs the `chatledger` command."""

from chatledger.cli import main

main()
