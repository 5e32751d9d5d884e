"""One access-log line per answer:

    127.0.0.1 "GET /5mo.jpg HTTP/1.1" 200 5000000 HIT 0.000412

client address, request line, status, body bytes, X-Cache, seconds.
"""

from __future__ import annotations

import logging

ACCESS = logging.getLogger("edge.access")
FORMAT = '%s "%s %s HTTP/%s" %d %d %s %.6f'
