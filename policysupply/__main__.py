"""``python -m policysupply`` runs the command line."""

from policysupply.cli import main

main()
