"""Thumbnails and large views of indexed images: JPEGs cached by content hash and size."""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from pathlib import Path

from lookalike.errors import NotFound
from lookalike.images import ImageError, load_image

#: the sizes of thumbnails (long side, px); a request is rounded up to one of them
THUMB_SIZES = (128, 256, 384, 512)
#: the long side of the large view
VIEW_MAX = 1600


class Thumbnails:
    """JPEG renditions of indexed images by content hash and size: memory, then disk, then made."""

    def __init__(self, folder: Path, max_pixels: int, memory_items: int = 512) -> None:
        self.folder = folder
        self.max_pixels = max_pixels
        self.memory_items = memory_items
        self._memory: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._making = threading.BoundedSemaphore(max(2, os.cpu_count() or 2))

    def get(self, sha256: str, path: str, size: int) -> bytes:
        """The JPEG of the content ``sha256`` (read from ``path``) at ``size`` px (long side);
        raises NotFound when its file is gone or unreadable."""
        key = (sha256, size)
        with self._lock:
            data = self._memory.get(key)
            if data is not None:
                self._memory.move_to_end(key)
                return data
        file = self.folder / sha256[:2] / f"{sha256}-{size}.jpg"
        try:
            data = file.read_bytes()
        except OSError:
            with self._making:
                data = self._make(path, size)
            try:
                file.parent.mkdir(parents=True, exist_ok=True)
                tmp = file.with_name(f".{file.name}.{os.getpid()}.{threading.get_ident()}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, file)
            except OSError:  # a read-only index folder: memory only
                pass
        if size <= max(THUMB_SIZES):
            with self._lock:
                self._memory[key] = data
                while len(self._memory) > self.memory_items:
                    self._memory.popitem(last=False)
        return data

    def _make(self, path: str, size: int) -> bytes:
        if not os.path.isfile(path):
            raise NotFound(f"the file of this image is gone: {path}")
        try:
            image = load_image(path, min_side=size, max_pixels=self.max_pixels).image
        except ImageError as exc:
            raise NotFound(f"the file of this image cannot be read: {exc.reason}") from None
        image.thumbnail((size, size))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85 if size <= 512 else 88, progressive=size > 512)
        return out.getvalue()

    def forget(self, sha256: str) -> None:
        """Drop every rendition of the content ``sha256`` (memory and disk)."""
        with self._lock:
            for key in [k for k in self._memory if k[0] == sha256]:
                del self._memory[key]
        for file in (self.folder / sha256[:2]).glob(f"{sha256}-*.jpg"):
            file.unlink(missing_ok=True)
