"""Woodytoys Edge: a caching reverse proxy (a CDN edge node) in Python."""

__version__ = "0.1.0"
