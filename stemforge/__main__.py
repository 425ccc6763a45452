"""``python -m stemforge`` runs the command-line interface."""

from stemforge.cli.main import main

if __name__ == "__main__":
    main()
