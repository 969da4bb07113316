"""Where file contents live: an interface, and the filesystem implementation used by default.

Metadata (owner, purpose, size) is in Redis (`records.py`); storage holds only bytes, by id.
Writes go to a temporary name and are renamed into place, so a reader never sees half a file
and a batch step that is retried after a crash simply writes the same file again.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol


class FileTooLarge(Exception):
    """More bytes than the limit; nothing is kept."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the file is larger than the limit of {limit} bytes")
        self.limit = limit


class FileStorage(Protocol):
    def write(self, file_id: str, chunks: Iterable[bytes], max_bytes: int) -> int: ...
    def open(self, file_id: str) -> BinaryIO: ...
    def delete(self, file_id: str) -> None: ...


class LocalFileStorage:
    """Files as `<root>/<file_id>` on a local or shared (PersistentVolumeClaim) filesystem."""

    def __init__(self, root: str) -> None:
        self.root = Path(root)  # made on the first write: an app that stores nothing makes nothing

    def _path(self, file_id: str) -> Path:
        if not file_id or "/" in file_id or file_id.startswith("."):
            raise ValueError(f"invalid file id {file_id!r}")
        return self.root / file_id

    def write(self, file_id: str, chunks: Iterable[bytes], max_bytes: int) -> int:
        """Store the chunks under `file_id`; returns the size. Raises FileTooLarge past
        `max_bytes`, leaving nothing behind."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".upload-")
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise FileTooLarge(max_bytes)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self._path(file_id))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return size

    def open(self, file_id: str) -> BinaryIO:
        return self._path(file_id).open("rb")

    def delete(self, file_id: str) -> None:
        self._path(file_id).unlink(missing_ok=True)


def read_chunks(stream: BinaryIO, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    while chunk := stream.read(chunk_size):
        yield chunk
