"""`python -m bench.topology up|down` (the same as `python -m bench topology ...`)."""

import sys

from bench.topology.cli import main

sys.exit(main())
