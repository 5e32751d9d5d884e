"""The Woodytoys shop, reproduced: API, front page and database, slow on purpose.

`origin.app.create_app(OriginSettings(...))` gives the whole shop as an aiohttp application;
`python -m origin serve` runs it (see docs/origin.md).
"""

from origin.settings import OriginSettings

__all__ = ["OriginSettings"]
