"""``python -m selfinstruct`` runs the command line."""

from selfinstruct.cli import main

# The guard matters: vLLM starts its engine in a spawned process, which imports this module again.
if __name__ == "__main__":
    main()
