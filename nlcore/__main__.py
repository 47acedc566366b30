"""`python -m nlcore ...`: the one command-line entry point (see `nlcore.cli`)."""

from nlcore.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
