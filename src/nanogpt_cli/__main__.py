"""`python -m nanogpt_cli` runs the same app as the `nanogpt` command."""

from nanogpt_cli.cli import main

if __name__ == "__main__":
    main()
