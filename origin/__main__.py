"""Command line of the origin package (placeholder until its issue lands)."""

import sys


def main(argv: list[str] | None = None) -> int:
    print("not implemented yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
