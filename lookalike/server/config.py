"""What ``lookalike serve`` was started with: the :class:`ServerConfig` and its defaults."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

#: pixel limit for uploaded and served images (decompression bombs), unless configured
DEFAULT_MAX_PIXELS = 100_000_000


@dataclass
class ServerConfig:
    """What ``lookalike serve`` was started with."""

    db: Path
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    allow_roots: list[Path] = field(default_factory=list)
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    cors_origins: list[str] = field(default_factory=list)
    allow_url_fetch: bool = False
    readers: int = 2
    threads: int | None = None  # inference threads per reader (default: cores / readers)
    workers: int | None = None  # decode processes of an add (default: one per core)
    warm_text: bool = True  # prepare the text model at start, so the first text query is quick
    upload_dir: Path = None  # type: ignore[assignment]  # default: DB/uploads
    thumb_dir: Path = None  # type: ignore[assignment]  # default: DB/thumbs
    #: the address the server listens on; requests must name it (or a loopback name) as Host
    host: str = "127.0.0.1"
    #: more host names that clients may use (``--allow-host``); ``"*"`` turns the check off
    allow_hosts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.db = Path(self.db).expanduser().absolute()
        self.allow_roots = [Path(os.path.realpath(Path(r).expanduser())) for r in self.allow_roots]
        self.upload_dir = Path(self.upload_dir or self.db / "uploads").absolute()
        self.thumb_dir = Path(self.thumb_dir or self.db / "thumbs").absolute()
        if self.threads is None:
            self.threads = max(1, (os.cpu_count() or 1) // max(1, self.readers))
