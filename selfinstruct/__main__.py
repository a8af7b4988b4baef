"""``python -m selfinstruct`` runs the command line."""

from selfinstruct.cli import main

main()
