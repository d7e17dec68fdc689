"""The routes of the server, one router per area, in the order the API documents them."""

from __future__ import annotations

from fastapi import APIRouter

from lookalike.server.routers import analysis, collection, images, pages, search

#: every router, in the order of the OpenAPI document
ROUTERS: list[APIRouter] = [
    collection.router,
    search.router,
    images.router,
    analysis.router,
    pages.router,
]

__all__ = ["ROUTERS"]
