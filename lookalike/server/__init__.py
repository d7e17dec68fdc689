"""``lookalike serve``: a web page and an HTTP API (FastAPI) over one collection.

>>> from lookalike.server import ServerConfig, create_app
>>> app = create_app(ServerConfig(db="~/my-index", token="secret"))  # an ASGI app

:func:`serve` runs it with uvicorn, printing the address and the token.
"""

from __future__ import annotations

from lookalike.server.app import ServerConfig, create_app
from lookalike.server.serve import serve

__all__ = ["ServerConfig", "create_app", "serve"]
