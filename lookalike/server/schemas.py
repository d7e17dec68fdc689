"""The shapes of the HTTP API: response and request models, and the query parameters of routes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query
from pydantic import BaseModel, Field

MAX_K = 500
MAX_TEXT = 500
MAX_PATHS = 1000

# -- parameters shared by routes -----------------------------------------------------------------

K = Annotated[int, Query(ge=1, le=MAX_K, description="how many results")]
Where = Annotated[
    str | None,
    Query(
        description='metadata filter: an expression (`category = "shoes" and price < 50`) '
        'or a JSON object (`{"category": "shoes", "price": {"lt": 50}}`)'
    ),
]
Folder = Annotated[str | None, Query(description="only images inside this folder")]
Wait = Annotated[bool, Query(description="answer when the job has finished")]


# -- response models (for the OpenAPI docs) ----------------------------------------------------


class Hit(BaseModel):
    id: int = Field(description="the image's id (a file of the collection)")
    path: str
    score: float = Field(description="similarity, larger is closer (cosine for deep)")
    distance: float = 0.0
    width: int = 0
    height: int = 0
    metadata: dict[str, Any] = Field(default_factory=dict)


class TextInfo(BaseModel):
    text: str = Field(description="the words searched for")
    model: str = Field(description='"concepts" (built in) or "clip-onnx:DIR"')
    matched: bool = Field(description="false when the words name nothing the model knows")
    concepts: list[dict[str, Any]] = Field(
        default_factory=list, description="the ImageNet concepts the words were read as"
    )
    weight: float | None = Field(None, description="the text's share of the score, with an image")
    warning: str | None = Field(None, description="why the results may be unreliable")


class SearchResponse(BaseModel):
    results: list[Hit] = Field(description="best first")
    took_ms: float = 0.0
    text: TextInfo | None = Field(None, description="how a text query was read (text searches)")


class Health(BaseModel):
    status: str
    version: str
    ready: bool
    jobs_active: int


class ImageInfo(BaseModel):
    id: int
    path: str
    size: int
    mtime: float
    content_id: int
    width: int
    height: int
    metadata: dict[str, Any] = Field(default_factory=dict)
    thumbnail: str
    view: str


class JobInfo(BaseModel):
    id: str
    kind: str
    status: str = Field(description="queued | running | done | failed")
    done: int
    total: int | None
    progress: float | None
    message: str
    result: dict[str, Any] | None
    error: str | None
    created: float
    started: float | None
    finished: float | None


class PathsRequest(BaseModel):
    paths: list[str] = Field(description="files or folders on the server, under an allowed root")
    metadata: str | None = Field(
        None, description="a metadata file (CSV or JSON lines) on the server, under an allowed root"
    )


class Deleted(BaseModel):
    deleted: int
    path: str
