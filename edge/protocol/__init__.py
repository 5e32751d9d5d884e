"""Bytes in and out: HTTP/1.1, HTTP/2 and its frames, TLS."""
