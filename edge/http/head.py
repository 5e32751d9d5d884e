"""An answer's head as HTTP/1.1 writes it: the engine keeps each stored entry's hit answer
as these bytes, built once per entry."""

from __future__ import annotations

from http import HTTPStatus

from edge.http.request import status_without_body


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def serialize_head(
    status: int, fields: list[tuple[str, str]], length: int | None, tail: str
) -> bytes:
    """The status line and header block. `tail`: framing and connection lines."""
    lines = [f"HTTP/1.1 {status} {reason(status)}"]
    lines += [f"{k}: {v}" for k, v in fields]
    head = "\r\n".join(lines) + "\r\n"
    if length is not None and not status_without_body(status):
        head += f"Content-Length: {length}\r\n"
    return (head + tail + "\r\n").encode("latin-1", "replace")
