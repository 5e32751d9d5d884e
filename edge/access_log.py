"""One access-log line per answer, the same from the front door and from the application:

    127.0.0.1 "GET /5mo.jpg HTTP/1.1" 200 5000000 HIT 0.000412

client address, request line, status, body bytes, X-Cache, seconds.
"""

from __future__ import annotations

import logging

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

ACCESS = logging.getLogger("edge.access")
FORMAT = '%s "%s %s HTTP/%s" %d %d %s %.6f'


class EdgeAccessLogger(AbstractAccessLogger):
    """aiohttp's access logger for the application: the client's address even behind the
    front door (which passes it along), and the cache's verdict."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        remote = request.remote or request.headers.get("X-Edge-Peer", "-")
        version = f"{request.version.major}.{request.version.minor}"
        self.logger.info(
            FORMAT,
            remote,
            request.method,
            request.rel_url.raw_path_qs,
            version,
            response.status,
            response.content_length
            if response.content_length is not None
            else response.body_length,
            response.headers.get("X-Cache", "-"),
            time,
        )
