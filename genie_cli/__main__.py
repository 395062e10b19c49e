"""``python -m genie_cli`` (also what torchrun launches)."""

from genie_cli.app import main

if __name__ == "__main__":
    main()
