"""Print the pinned runtime dependencies of pyproject.toml, one a line, minus the names given.

The images install only what their role needs (the edge has no use for matplotlib or Pillow)
while the pins still come from the one place they are kept: pyproject.toml.

    python requirements_from_pyproject.py pyproject.toml matplotlib Pillow > requirements.txt
"""

from __future__ import annotations

import re
import sys
import tomllib


def requirements(pyproject: str, exclude: list[str]) -> list[str]:
    with open(pyproject, "rb") as f:
        deps: list[str] = tomllib.load(f)["project"]["dependencies"]
    dropped = {name.lower() for name in exclude}
    kept = []
    for dep in deps:
        name = re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0].strip().lower()
        if name not in dropped:
            kept.append(dep)
    return kept


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    print("\n".join(requirements(argv[0], argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
