"""`/_edge/dashboard`: the operators' page, served by the edge itself.

The page (edge/static/dashboard.html, .css, .js: plain HTML, CSS and vanilla JavaScript
drawing on canvases, no library, nothing from another host) polls the JSON endpoints once
a second: `/_edge/stats` (the whole node's numbers, top objects, workers, origins),
`/_edge/history` (per-second rates of the last minutes) and `/_edge/nodes` (the nodes
sharing the Redis and the last purge with its acknowledgements).

Read-only without the purge token: the purge form is not in the page. It comes from
`/_edge/dashboard/purge-form`, answered only to `Authorization: Bearer <token>` (the page
asks for the token, keeps it in the tab's sessionStorage, and sends it with each purge to
`POST /_edge/purge`, which checks it again). A Content-Security-Policy allows scripts,
styles and requests to this origin only.
"""

from __future__ import annotations

import functools
import html
from importlib import resources
from typing import TYPE_CHECKING

from edge.cache import respond
from edge.http.answer import Answer

if TYPE_CHECKING:
    from edge.engine.engine import Engine
    from edge.http.request import Request

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PURGE_FORM = "/_edge/dashboard/purge-form"
PAGES = {
    "/_edge/dashboard": ("dashboard.html", "text/html; charset=utf-8"),
    "/_edge/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/_edge/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    PURGE_FORM: ("purge-form.html", "text/html; charset=utf-8"),
}


@functools.cache
def asset(name: str) -> bytes:
    return resources.files("edge").joinpath("static", name).read_bytes()


def page(path: str, engine: Engine, req: Request) -> Answer:
    name, content_type = PAGES[path]
    if path == PURGE_FORM:
        from edge.ops.purge_api import authorize

        denied = authorize(req.headers, engine.cfg.purge_token)
        if denied is not None:
            return denied
    body = asset(name)
    if name == "dashboard.html":
        body = body.replace(b"{{node}}", html.escape(engine.cfg.node).encode())
    return respond.plain(
        200,
        body,
        content_type,
        Content_Security_Policy=CSP,
        X_Content_Type_Options="nosniff",
    )
